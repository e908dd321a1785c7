#!/usr/bin/python3
"""Add a single-layer image to an OCI image layout (stdlib only).

    oci.py LAYOUT_DIR LAYER_TAR_GZ --config JSON --tag T [--tag T ...]
           [--arch ARCH] [--created RFC3339] [--created-by TEXT]

LAYOUT_DIR is created if missing (oci-layout, index.json, blobs/sha256/).
LAYER_TAR_GZ is a gzip-compressed tar of the image's root filesystem; its
uncompressed sha256 becomes rootfs.diff_ids[0] of the image config, its
compressed digest and size go into the manifest. --config is a JSON object
with the runtime config (Cmd, Entrypoint, Env, ExposedPorts, WorkingDir, ...).
Each --tag becomes one index.json entry (annotation
org.opencontainers.image.ref.name); an existing entry with the same tag is
replaced. Blobs no longer referenced by index.json are removed.
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


def sha256_file(path, gunzip=False):
    h = hashlib.sha256()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_atomic(path, data):
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def put_bytes(layout, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    p = blob_path(layout, digest)
    if not os.path.exists(p):
        write_atomic(p, data)
    return digest, len(data)


def put_file(layout, path):
    digest = sha256_file(path)
    p = blob_path(layout, digest)
    if not os.path.exists(p):
        tmp = p + ".tmp"
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    return digest, os.path.getsize(p)


def gc(layout, index):
    keep = set()
    for m in index.get("manifests", []):
        keep.add(m["digest"])
        with open(blob_path(layout, m["digest"]), "rb") as f:
            man = json.load(f)
        keep.add(man["config"]["digest"])
        for layer in man.get("layers", []):
            keep.add(layer["digest"])
    bdir = os.path.join(layout, "blobs", "sha256")
    for name in os.listdir(bdir):
        if "sha256:" + name not in keep:
            os.unlink(os.path.join(bdir, name))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("layout")
    ap.add_argument("layer")
    ap.add_argument("--config", required=True, help="runtime config, JSON object")
    ap.add_argument("--tag", action="append", required=True)
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--created", default=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    ap.add_argument("--created-by", default="sandpit ops/seed/build")
    a = ap.parse_args()

    runtime = json.loads(a.config)
    if not isinstance(runtime, dict):
        sys.exit("oci.py: --config must be a JSON object")
    for t in a.tag:
        if not t or len(t) > 128 or not all(c.isalnum() or c in "._-" for c in t):
            sys.exit("oci.py: bad tag %r" % t)

    os.makedirs(os.path.join(a.layout, "blobs", "sha256"), exist_ok=True)
    write_atomic(os.path.join(a.layout, "oci-layout"), canonical({"imageLayoutVersion": "1.0.0"}))

    diff_id = sha256_file(a.layer, gunzip=True)
    layer_digest, layer_size = put_file(a.layout, a.layer)

    config = {
        "created": a.created,
        "architecture": a.arch,
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": a.created, "created_by": a.created_by}],
    }
    config_digest, config_size = put_bytes(a.layout, canonical(config))

    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": layer_size}],
    }
    man_digest, man_size = put_bytes(a.layout, canonical(manifest))

    index_path = os.path.join(a.layout, "index.json")
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    else:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    tags = set(a.tag)
    index["manifests"] = [
        m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) not in tags
    ]
    for t in a.tag:
        index["manifests"].append({
            "mediaType": MT_MANIFEST,
            "digest": man_digest,
            "size": man_size,
            "platform": {"architecture": a.arch, "os": "linux"},
            "annotations": {REF_NAME: t},
        })
    write_atomic(index_path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
    gc(a.layout, index)
    print("%s %s layer %s (%d bytes) tags %s" % (a.layout, man_digest, layer_digest, layer_size, ",".join(a.tag)))


if __name__ == "__main__":
    main()
