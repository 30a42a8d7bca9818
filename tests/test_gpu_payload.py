"""What the GPU check carries (bench.gpu.payload): the wheel set and the cut bitsandbytes wheel."""

import zipfile

from bench.gpu import payload
from conftest import ROOT


def test_carried_takes_what_the_image_lacks_with_its_requirements():
    wanted = payload.carried()
    # the pinned stack the image lacks, and requirements of requirements (snakemake -> yte, datasets -> dill)
    for name in ("transformers", "trl", "peft", "bitsandbytes", "datasets", "snakemake", "yte", "dill"):
        assert name in wanted
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split() if "==" in line)
    assert wanted["trl"] == pins["trl"] and wanted["transformers"] == pins["transformers"]
    # the image's torch and hub stay there, and so does what only they need (huggingface-hub 2 -> httpx2)
    assert not {"torch", "numpy", "huggingface-hub", "pulp", "httpx2"} & set(wanted)


def test_bitsandbytes_cut_to_one_cuda_build_keeps_its_record(tmp_path):
    libs = [f"bitsandbytes/libbitsandbytes_{build}.so" for build in ("cuda118", "cuda130", "cuda132", "cpu")]
    names = ["bitsandbytes/__init__.py", *libs, "bitsandbytes-0.50.2.dist-info/RECORD"]
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in names[:-1]:
            archive.writestr(name, b"x" * 10)
        archive.writestr(names[-1], "".join(f"{name},sha256=abc,10\n" for name in names[:-1]) + f"{names[-1]},,\n")

    payload.trim_bitsandbytes(tmp_path)

    kept = ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cuda130.so",
            "bitsandbytes/libbitsandbytes_cpu.so"]
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(archive.namelist()) == sorted([*kept, names[-1]])
        record = archive.read(names[-1]).decode().splitlines()
    assert [line.split(",")[0] for line in record] == [*kept, names[-1]]
