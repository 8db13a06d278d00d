"""Larger networks shared by agents and terms (the RSSM world model)."""
