"""Preference labels from a person while the agent trains: ``rl label RUN_DIR``.

A preference stream with ``teacher=human`` writes each feedback session's queries into the run
directory instead of asking a scripted teacher: ``queries.jsonl`` (one record per query:
``id``, ``stream``, ``step``, the two segments' replay ``episodes`` and ``starts``) and
``queries/<id>.npz`` (the pair's observations and actions, what the reward model trains on,
and the frames a person looks at). ``rl label`` serves a local page (standard library only,
on 127.0.0.1) that shows the oldest unanswered query as two clips side by side and takes
left / right / equal / skip by buttons or the keys 1 (left), 2 (right), 3 (equal), 0 (skip);
each answer is appended to ``human_labels.jsonl`` (``{"query": id, "label": 0 | 1 | 0.5 |
"skip"}``: 0 the left clip preferred). The training run reads the answers at its next session:
they enter the term's label buffer and ``labels.jsonl`` (``"by": "human"``, with ``"query"``),
and it fits; then it writes new queries while the budget lasts. ``human_labels.jsonl`` is
never cut back on resume, so no answer a person gave is lost: answers whose ``labels.jsonl``
record a resume removed are read again.

The clips are the frames of image observations (the newest frame of a stack), or, for a DMC
task's vector observations, its simulator states: the agent stores each step's
``physics.get_state()`` in the replay and the session renders the chosen segments.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ANSWERS = {"left": 0.0, "right": 1.0, "equal": 0.5, "skip": "skip"}


def frames_of(obs) -> np.ndarray:
    """RGB frames [..., H, W, 3] uint8 of image observations [..., H, W, C]: C = 3 as they are,
    otherwise the last channel (the newest frame of a grey stack) as grey."""
    obs = np.asarray(obs)
    if obs.ndim < 3:
        raise ValueError(
            f"human labels need frames to show; observations of shape {obs.shape[-1:]} are vectors"
        )
    x = obs if obs.shape[-1] == 3 else np.repeat(obs[..., -1:], 3, -1)
    return x.astype(np.uint8)


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line
    return out


class QueryStore:
    """The queries a run waits on and the answers given, in its directory."""

    def __init__(self, run_dir):
        self.dir = Path(run_dir)
        self.index, self.answers_path = self.dir / "queries.jsonl", self.dir / "human_labels.jsonl"
        self.files = self.dir / "queries"

    def add(self, stream: str, step: int, obs, action, episodes, starts, frames=None) -> str:
        """Store one query (obs / action [2, L, ...]; ``frames`` [2, L, H, W, 3], by default the
        observations themselves); returns its id."""
        qid = f"{step}-{uuid.uuid4().hex[:8]}"  # unique: a resumed session's queries are new ones
        self.files.mkdir(parents=True, exist_ok=True)
        tmp = self.files / f"{qid}.part"
        with open(tmp, "wb") as f:
            shown = frames_of(obs) if frames is None else np.asarray(frames, np.uint8)
            np.savez_compressed(f, obs=np.asarray(obs), action=np.asarray(action), frames=shown)
        tmp.rename(self.files / f"{qid}.npz")  # whole or absent
        _append(self.index, {"id": qid, "stream": stream, "step": int(step),
                             "episodes": [int(e) for e in episodes], "starts": [int(s) for s in starts]})  # fmt: skip
        return qid

    def queries(self) -> list[dict]:
        return _rows(self.index)

    def answers(self) -> dict:
        """{query id: label} (0, 1, 0.5 or "skip"; a later answer replaces an earlier one)."""
        return {r["query"]: r["label"] for r in _rows(self.answers_path)}

    def pending(self, stream: str | None = None) -> list[dict]:
        done = self.answers()
        return [
            q for q in self.queries() if q["id"] not in done and (stream is None or q["stream"] == stream)
        ]

    def answer(self, qid: str, label) -> None:
        if label not in ANSWERS.values():
            raise ValueError(f"label {label!r}; one of 0 (left), 1 (right), 0.5 (equal), 'skip'")
        if qid not in {q["id"] for q in self.queries()}:
            raise KeyError(f"no query {qid!r} in {self.index}")
        _append(self.answers_path, {"query": qid, "label": label, "time": time.time()})

    def load(self, qid: str) -> dict:
        with np.load(self.files / f"{qid}.npz") as f:
            return {k: f[k] for k in f.files}

    def clip_gif(self, qid: str, side: int, scale: int = 3, fps: int = 15) -> bytes:
        from PIL import Image

        frames = self.load(qid)["frames"][side]
        images = [
            Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in frames
        ]
        buf = io.BytesIO()
        images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
        return buf.getvalue()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>rl label: {run}</title>
<style>body{{font-family:sans-serif;margin:2em}} .clips{{display:flex;gap:2em}} figure{{margin:0}}
img{{image-rendering:pixelated;border:1px solid #888}} button{{font-size:1.1em;margin:.3em}}</style></head>
<body><h1>Which clip is better?</h1>
<p id="status">{status}</p>
<div class="clips" id="query" data-id="{qid}">{clips}</div>
<div id="buttons">{buttons}</div>
<script>
const qid = document.getElementById("query").dataset.id;
async function answer(label) {{
  if (!qid) return;
  const r = await fetch("/label", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                   body: JSON.stringify({{query: qid, label: label}})}});
  document.getElementById("status").textContent = r.ok ? "saved" : "error " + r.status;
  if (r.ok) location.reload();
}}
const keys = {{"1": 0, "2": 1, "3": 0.5, "0": "skip", "ArrowLeft": 0, "ArrowRight": 1}};
document.addEventListener("keydown", e => {{ if (e.key in keys) answer(keys[e.key]); }});
</script></body></html>"""


def page(store: QueryStore) -> str:
    pending = store.pending()
    if not pending:
        return PAGE.format(run=store.dir.name, status="No query waits: the run writes more at its next session.",
                           qid="", clips="", buttons="")  # fmt: skip
    q = pending[0]
    clips = "".join(f'<figure><img id="clip{s}" src="/clip/{q["id"]}/{s}.gif" alt="clip {s}">'
                    f"<figcaption>{'left (1)' if s == 0 else 'right (2)'}</figcaption></figure>" for s in (0, 1))  # fmt: skip
    keys = {"left": 1, "right": 2, "equal": 3, "skip": 0}
    buttons = "".join(f'<button id="{name}" onclick="answer({json.dumps(v)})">{name} ({keys[name]})</button>'
                      for name, v in ANSWERS.items())  # fmt: skip
    status = f"{len(pending)} queries wait (this one from step {q['step']}, stream {q['stream']})."
    return PAGE.format(run=store.dir.name, status=status, qid=q["id"], clips=clips, buttons=buttons)


def server(run_dir, port: int = 8000, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The labeling page's HTTP server (not started: ``serve_forever`` it, or use ``serve``)."""
    store = QueryStore(run_dir)
    if not (Path(run_dir) / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, kind: str):
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 (the stdlib's name)
            parts = self.path.strip("/").split("/")
            if self.path in ("/", "/index.html"):
                return self._send(200, page(store).encode(), "text/html; charset=utf-8")
            if parts[0] == "queries":
                return self._send(200, json.dumps(store.pending()).encode(), "application/json")
            if parts[0] == "clip" and len(parts) == 3 and parts[2] in ("0.gif", "1.gif"):
                try:
                    return self._send(200, store.clip_gif(parts[1], int(parts[2][0])), "image/gif")
                except FileNotFoundError:
                    pass
            self._send(404, b"not found", "text/plain")

        def do_POST(self):  # noqa: N802
            if self.path != "/label":
                return self._send(404, b"not found", "text/plain")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                store.answer(str(body["query"]), body["label"])
            except (ValueError, KeyError, TypeError) as e:
                return self._send(400, str(e).encode(), "text/plain")
            self._send(200, b"{}", "application/json")

        def log_message(self, *args):  # quiet: the terminal shows what ``serve`` prints
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve(run_dir, port: int = 8000, host: str = "127.0.0.1") -> None:
    httpd = server(run_dir, port, host)
    print(f"labeling {run_dir} on http://{host}:{httpd.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


def serve_in_thread(run_dir, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server on a free port in a daemon thread, and its URL (tests, notebooks)."""
    httpd = server(run_dir, port)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
