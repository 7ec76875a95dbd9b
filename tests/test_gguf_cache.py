"""The dequantized GGUF cache when several processes load the same new file at once."""

import os
import subprocess
import sys
import time

from test_export import write_source_gguf
from tiny import save_tiny

LOAD = """
import os, sys, time
while not os.path.exists(sys.argv[2]):  # start together
    time.sleep(0.001)
from rys_search.loading import load_model
loaded = load_model(sys.argv[1], device="cpu")
print("from_cache", loaded.from_cache, loaded.n_layers)
"""


def test_two_processes_loading_one_new_gguf_dequantize_it_once(tmp_path):
    folder = tmp_path / "hf"
    save_tiny(folder, "llama", bpe=True)
    gguf = tmp_path / "tiny.gguf"
    write_source_gguf(str(folder), gguf)
    env = {**os.environ, "RYS_SEARCH_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(gguf), str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(3)  # both past their imports, waiting for the go
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    answers = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert answers == ["from_cache False 6", "from_cache True 6"]  # one converted, the other read its result
    [entry] = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert (entry / "rys-cache.json").is_file() and not [p for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name]
