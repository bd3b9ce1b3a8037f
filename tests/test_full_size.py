"""Full-size presets end to end (opt-in: `bash scripts/test.sh -m slow`; minutes and GBs each).

Each published XLM architecture is built by Transformers from its exact hub config with
random weights, converted by `kzoo convert`, checked against PyTorch, and driven through
`kzoo fill-mask --lang fr` and `kzoo generate --lang en`. The tokenizer is the tests' tiny BPE
one (a few hundred ids of the model's vocabulary), since no hub files can be fetched here.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from kzoo.cli import main
from kzoo.converters.verify import verify
from xlm_fixtures import tokenizer_dir

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "hf_configs"
XLM_PRESETS = ["xlm-mlm-enfr-1024", "xlm-clm-enfr-1024", "xlm-mlm-100-1280"]


@pytest.mark.parametrize("name", XLM_PRESETS)
def test_xlm_preset_end_to_end(name, tmp_path, capsys):
    hf = json.loads((DATA / f"{name}.json").read_text())
    hf.pop("_kzoo_note", None)  # as on the hub: nothing says the clm model is causal
    src = tmp_path / name  # the name is all that tells xlm-clm-enfr-1024 apart
    torch.manual_seed(0)
    transformers.XLMWithLMHeadModel(transformers.XLMConfig(**hf)).eval().save_pretrained(src)
    languages = [hf["id2lang"][str(i)] for i in range(len(hf["id2lang"]))]
    tok, _ = tokenizer_dir(tmp_path / "tokenizer", languages)
    for f in tok.iterdir():
        if f.name != "config.json":
            shutil.copy(f, src / f.name)

    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["preset"] == name
    config = json.loads((out / "config.json").read_text())
    assert config["backbone"]["trained_causal"] == ("clm" in name)

    report = verify(out, src)
    assert report["ok"], [r for r in report["rows"] if not r["ok"]]

    assert main(["fill-mask", str(out), "le chat est <special1> .", "--lang", "fr", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(["generate", str(out), "the cat", "--lang", "en", "--max-new-tokens", "4", "--ignore-eos",
                 "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert len(generated["generated_ids"]) == 4
    assert len(generated["token_ids"]) == generated["prompt_length"] + 4
