"""``taglens analyze s3://... --engine ray -o s3://...`` through the installed entry point against a
real S3 service (moto's server on 127.0.0.1): the job starts its own local Ray instance, reads the
bucket, writes Parquet back into it, and its rows are the local engine's records."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq

from taglens import engine
from taglens.io.arrow import records_from_table
from taglens.models.modelset import ModelSet, TaskRequest

from ..cli.installed import run_taglens
from ..conftest import photo
from ..s3 import moto_server


def test_a_bucket_in_and_a_bucket_out(checkpoints, tmp_path):
    images = {f"img{i}.png": photo(40 + i, 30, i) for i in range(3)}
    for name, image in images.items():
        image.save(tmp_path / name)
    with moto_server() as s3:
        client = s3.client()
        client.create_bucket(Bucket="photos")
        for name in images:
            client.upload_file(str(tmp_path / name), "photos", f"in/{name}")
        client.put_object(Bucket="photos", Key="in/broken.jpg", Body=b"\xff\xd8 not a jpeg")
        result = run_taglens("analyze", "s3://photos/in/", "--engine", "ray", "--tasks", "nsfw",
                             "--nsfw-model", checkpoints["vit"], "-o", "s3://photos/out/", env=s3.env(), timeout=600)
        assert result.returncode == 0, result.stderr
        assert "4 images: 3 done, 1 error" in result.stderr
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="photos", Prefix="out/")["Contents"]
                if not o["Key"].endswith("/")]  # folder markers aside
        assert keys and all(k.endswith(".parquet") for k in keys)  # the write check left nothing behind
        tables = [pq.read_table(io.BytesIO(client.get_object(Bucket="photos", Key=k)["Body"].read())) for k in keys]
    rows = {r.path: r for table in tables for r in records_from_table(table)}
    assert sorted(rows) == [f"s3://photos/in/{n}" for n in ["broken.jpg", *sorted(images)]]
    assert "not" in rows["s3://photos/in/broken.jpg"].error or rows["s3://photos/in/broken.jpg"].error
    jobs = ModelSet(nsfw_model=checkpoints["vit"], device="cpu").jobs(TaskRequest(tasks=("nsfw",)))
    for name in images:
        [want] = engine.run([str(tmp_path / name)], jobs)
        got = rows[f"s3://photos/in/{name}"]
        assert (got.error, got.sha256, got.width, got.height) == (None, want.sha256, want.width, want.height)
        assert got.nsfw.label == want.nsfw.label
        assert np.allclose([got.nsfw.scores[k] for k in want.nsfw.scores], list(want.nsfw.scores.values()),
                           rtol=0, atol=1e-6)
