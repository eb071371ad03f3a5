"""Every ```python block in README.md and docs/ runs here, so the documented code never rots.

The convention, written in the Markdown right before a block (HTML comments: GitHub and the site
show nothing of them):

* no comment: the block runs on its own, in a fresh namespace, in a temporary working folder;
* ``<!-- not-run: REASON -->``: the block is not run, for the stated reason (it needs a GPU, a
  cluster, a download or a long training run); the test shows as skipped with that reason;
* ``<!-- prelude: NAME -->``: the block runs after the hidden set-up ``PRELUDES[NAME]`` below
  (a tiny model and data set, so that a short example can stay short);
* ``<!-- continue -->``: the block runs after the previous block of the same file that runs,
  in its namespace (a page that builds an example up step by step).

Examples that train use tiny sizes: the whole module takes seconds, not minutes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 250

_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(not-run|prelude|continue)\s*(?::\s*(.*?))?\s*-->\s*$")

# Hidden set-up for blocks marked <!-- prelude: NAME -->; each defines what the block uses.
PRELUDES = {
    # `model` (a LightningModule whose configure_optimizers returns the optimizer alone) and
    # `train_loader`: a linear regression, 4 batches an epoch.
    "lightning": """
import torch
import lightning.pytorch as pl

class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

model = Regression()
train_loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 1)), batch_size=16
)
""",
    # `model` (a one-layer GPT-2 built from a config, no download) and `data`: 32 sequences.
    "huggingface": """
import torch
from transformers import GPT2Config, GPT2LMHeadModel

model = GPT2LMHeadModel(
    GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
)
tokens = torch.randint(0, 32, (32, 16))
data = [{"input_ids": row, "labels": row} for row in tokens]
""",
    # `model`, `dataset` (a TensorDataset of 512 examples for a 10-class problem) and `epochs`.
    "classifier": """
import torch

dataset = torch.utils.data.TensorDataset(torch.randn(512, 20), torch.randint(0, 10, (512,)))
model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
epochs = 2
""",
}

# The optional frameworks a prelude needs (the dev extra, which `make test` installs).
PRELUDE_NEEDS = {"lightning": ["lightning"], "huggingface": ["transformers", "accelerate"]}


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None = None
    prelude: str | None = None
    continues: bool = False
    chain: list[Block] = field(default_factory=list)  # the blocks a continued one runs after

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file with the directives written right before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.group(1), match.group(2)
        start = i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1  # the closing fence
        if lang not in ("python", "py"):
            continue
        block = Block(path, start + 1, "\n".join(body) + "\n")
        j = start - 1
        while j >= 0 and (directive := _DIRECTIVE.match(lines[j])):
            kind, value = directive.group(1), directive.group(2)
            if kind == "not-run":
                block.not_run = value or ""
            elif kind == "prelude":
                block.prelude = value
            else:
                block.continues = True
            j -= 1
        blocks.append(block)
    return blocks


def all_blocks() -> list[Block]:
    found = []
    for path in FILES:
        previous: Block | None = None  # the last block of the file that runs
        for block in python_blocks(path):
            if block.continues and previous is not None:
                block.chain = [*previous.chain, previous]
            found.append(block)
            if block.not_run is None:
                previous = block
    return found


BLOCKS = all_blocks()


def _params() -> list:
    params = []
    for block in BLOCKS:
        marks = [pytest.mark.skip(reason=f"not run: {block.not_run}")] if block.not_run else []
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("block", _params())
def test_documented_code_runs(block: Block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever an example writes lands in a temporary folder
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for step in [*block.chain, block]:
        if step.prelude is not None:
            for module in PRELUDE_NEEDS.get(step.prelude, []):
                pytest.importorskip(module)
            exec(compile(PRELUDES[step.prelude], f"<prelude {step.prelude}>", "exec"), namespace)
        exec(compile(step.code, step.name, "exec"), namespace)


def test_the_docs_have_examples_and_every_marker_is_well_formed():
    assert any(b.path.name == "README.md" for b in BLOCKS)
    for block in BLOCKS:
        assert block.not_run is None or block.not_run.strip(), (
            f"{block.name}: not-run needs a reason"
        )
        assert block.prelude is None or block.prelude in PRELUDES, (
            f"{block.name}: unknown prelude {block.prelude!r}; known: {sorted(PRELUDES)}"
        )
        assert not (block.continues and not block.chain), f"{block.name}: nothing to continue"


def test_the_readme_stays_short_and_starts_a_newcomer():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    for needed in ("pip install qlr", "make demo", "make test"):
        assert needed in text
