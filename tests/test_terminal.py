"""`titok models` and `titok encode` in a real pseudo-terminal 80 columns wide.

The command runs with a pty as stdin, stdout and stderr (window size set with TIOCSWINSZ,
COLUMNS=80, TERM=xterm-256color), so rich sees a terminal: colours, the progress bar and the
width all come from it. The bytes it writes are replayed on a small 80-column screen model
(printable text, CR/LF, cursor up/down, erase line); a write past column 80 is recorded,
as a real terminal would wrap it there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")

COLUMNS = 80
_CSI = re.compile(rb"\x1b\[([?0-9;]*)([ -/]*)([@-~])")
_OSC = re.compile(rb"\x1b\][^\x07\x1b]*(\x07|\x1b\\)")


def run_in_pty(args: list[str], cwd=ROOT, timeout: float = 240) -> tuple[int, bytes]:
    """Run `python -m titok_cli ARGS` on an 80x24 pty; return its exit code and every byte it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    env = {**os.environ, "COLUMNS": str(COLUMNS), "LINES": "24", "TERM": "xterm-256color"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TITOK_DEBUG", "TERMINAL_WIDTH"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "titok_cli", *args], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, start_new_session=True)  # fmt: skip
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as exc:  # EIO: the child closed its side
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        else:
            proc.kill()
            pytest.fail(f"titok {' '.join(args)} did not finish in {timeout} s")
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks)


class Screen:
    """Just enough of a terminal to replay rich's output: text, CR, LF, cursor up/down, erase."""

    def __init__(self, columns: int = COLUMNS) -> None:
        self.columns = columns
        self.lines: list[str] = [""]
        self.row = self.col = 0
        self.overflow: list[int] = []  # rows written past the last column

    def feed(self, data: bytes) -> "Screen":
        from rich.cells import cell_len

        data = _OSC.sub(b"", data)
        pos = 0
        for match in _CSI.finditer(data + b"\x1b[0m"):
            self._text(data[pos : match.start()].decode("utf-8", "replace"), cell_len)
            self._control(match.group(1).decode(), match.group(3).decode())
            pos = match.end()
        return self

    def _text(self, text: str, cell_len) -> None:
        for ch in text:
            if ch == "\n":
                self.row += 1
                while len(self.lines) <= self.row:
                    self.lines.append("")
            elif ch == "\r":
                self.col = 0
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch >= " " or ch == "\t":
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + ch + line[self.col + 1 :]
                self.col += cell_len(ch)
                if self.col > self.columns and self.row not in self.overflow:
                    self.overflow.append(self.row)

    def _control(self, params: str, final: str) -> None:
        n = int(params) if params.isdigit() else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row += n
            while len(self.lines) <= self.row:
                self.lines.append("")
        elif final == "G":
            self.col = n - 1
        elif final == "K":
            line = self.lines[self.row]
            self.lines[self.row] = "" if params == "2" else line[: self.col]
        # colours (m), cursor show/hide (?25l/h) and the rest do not move text

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines)

    def too_wide(self) -> str:
        return "\n".join(self.lines[row] for row in self.overflow)


def test_screen_model_records_a_line_past_80_columns():
    screen = Screen().feed(b"x" * 81 + b"\r\n" + b"\x1b[1mok\x1b[0m\r\nold\rnew\r\n")
    assert len(screen.overflow) == 1
    assert screen.text.splitlines()[1:] == ["ok", "new"]


@pytest.fixture(scope="module")
def models_screen() -> tuple[int, bytes, Screen]:
    code, raw = run_in_pty(["models"])
    return code, raw, Screen().feed(raw)


def test_models_table_fits_80_columns(models_screen):
    code, raw, screen = models_screen
    assert code == 0, screen.text
    assert "Traceback" not in screen.text
    assert b"\x1b[" in raw  # rich saw a terminal
    assert "titok-l32" in screen.text and "titok-b128-512-gen" in screen.text
    assert not screen.overflow, screen.too_wide()


def test_models_table_keeps_the_cached_column(models_screen):
    _, _, screen = models_screen
    header = next(line for line in screen.text.splitlines() if "name" in line)
    assert "cached" in header, screen.text
    rows = [line for line in screen.text.splitlines() if "titok-l32 " in line]
    assert rows and re.search(r"\b(yes|no)\b", rows[0]), screen.text


def test_encode_shows_its_summary_at_80_columns(tmp_path):
    # the command of the issue, run from a folder beside ../shared as the repo root is
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")
    (tmp_path / "work").mkdir()
    args = ["encode", "../shared/images", "-o", "X.npy", "--model", "../shared/golden/tok_vq_legacy_tiny"]
    code, raw = run_in_pty(args, cwd=tmp_path / "work")
    screen = Screen().feed(raw)
    assert code == 0, screen.text
    assert "Traceback" not in screen.text and "error" not in screen.text.lower()
    images = sum(1 for p in (ROOT.parent / "shared" / "images").iterdir() if p.is_file())
    summary = [line for line in screen.text.splitlines() if "->" in line]
    assert summary == [f"{images} images -> X.npy (8 tokens each), 0 failed"], screen.text
    assert (tmp_path / "work" / "X.npy").is_file()
    assert not screen.overflow, screen.too_wide()
    frames = _CSI.sub(b"", raw).decode("utf-8", "replace")  # the bar is transient: look at what was drawn
    assert re.search(r"encoding .*\d+/\d+.* eta ", frames), frames[-2000:]  # count, rate, elapsed and ETA
