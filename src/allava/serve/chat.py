"""A multi-turn chat with any saved checkpoint, in the terminal.

The image is attached to the first human turn (``<image>\\n`` marker), later turns are text, and
the whole history is re-sent each turn, exactly the conversation format the model trained on.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from PIL import Image

from allava.evaluate.generate import Answerer, Question

HELP = "commands: /image PATH (new image, new conversation), /reset, /quit"


class Chat:
    def __init__(self, answerer: Answerer, image: str | Path | None = None, max_new_tokens: int = 256):
        self.answerer = answerer
        self.max_new_tokens = max_new_tokens
        self.set_image(image)

    def set_image(self, image: str | Path | None) -> None:
        if image is not None:
            with Image.open(image) as im:  # fail now, with the path, not mid-conversation
                im.verify()
        self.image = image
        self.history: list[dict] = []

    def ask(self, text: str) -> str:
        value = f"<image>\n{text}" if self.image is not None and not self.history else text
        self.history.append({"from": "human", "value": value})
        reply = self.answerer.answer([Question(self.history, self.image)], self.max_new_tokens)[0]
        self.history.append({"from": "gpt", "value": reply})
        return reply


def run_chat(chat: Chat, inp: TextIO = sys.stdin, out: TextIO = sys.stdout, interactive: bool = True) -> None:
    if interactive:
        print(HELP, file=out)
    while True:
        if interactive:
            print("you> ", end="", file=out, flush=True)
        line = inp.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            chat.set_image(chat.image)
            print("(conversation cleared)", file=out)
            continue
        if line.startswith("/image "):
            try:
                chat.set_image(line.split(" ", 1)[1].strip())
                print("(new image, new conversation)", file=out)
            except (OSError, ValueError) as e:
                print(f"(cannot open image: {e})", file=out)
            continue
        print(f"assistant> {chat.ask(line)}", file=out, flush=True)
