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

HELP = "commands: /image PATH (new image, new conversation), /reset, /help, /quit; Ctrl-C stops an answer"
COMMANDS = ("/image", "/reset", "/help", "/quit", "/exit")


class Chat:
    def __init__(self, answerer: Answerer, image: str | Path | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0):
        self.answerer = answerer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
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
        try:
            reply = self.answerer.answer([Question(self.history, self.image)], self.max_new_tokens,
                                         self.temperature, self.top_p)[0]
        except BaseException:
            self.history.pop()  # an interrupted or failed question leaves the history as it was
            raise
        self.history.append({"from": "gpt", "value": reply})
        return reply


def banner(model: str, template: str, image: str | Path | None) -> str:
    return f"model {model} (template {template}); image: {image or 'none (text-only chat)'}"


def run_chat(chat: Chat, inp: TextIO | None = None, out: TextIO | None = None, interactive: bool = True,
             title: str | None = None) -> None:
    """The loop. Ctrl-C during an answer drops that answer and returns to the prompt; at the
    prompt (or end of input) it ends the chat. Lines starting with `/` are commands, never text."""
    inp, out = inp or sys.stdin, out or sys.stdout  # looked up per call: tests and wrappers swap them
    if title:
        print(title, file=out if interactive else sys.stderr)
    if interactive:
        print(HELP, file=out)
    while True:
        if interactive:
            print("you> ", end="", file=out, flush=True)
        try:
            line = inp.readline()
        except KeyboardInterrupt:
            print("", file=out)
            break
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            arg = arg.strip()
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                chat.set_image(chat.image)
                print("(conversation cleared)", file=out)
            elif command == "/help":
                print(HELP, file=out)
            elif command == "/image":
                if not arg:
                    print("(usage: /image PATH)", file=out)
                    continue
                try:
                    chat.set_image(arg)
                    print(f"(new image {arg}, new conversation)", file=out)
                except (OSError, ValueError) as e:
                    print(f"(cannot open image: {e})", file=out)
            else:
                print(f"(unknown command {command}; {HELP})", file=out)
            continue
        try:
            reply = chat.ask(line)
        except KeyboardInterrupt:
            print("\n(answer stopped; ask again or /quit)", file=out, flush=True)
            continue
        print(f"assistant> {reply}", file=out, flush=True)
