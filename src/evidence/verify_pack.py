#!/usr/bin/env python3
# Checks a chainlog evidence pack without chainlog: python3 verify_pack.py pack.zip [PUBLIC_KEY_FILE]
# Needs Python 3.8+ and `cryptography`. Without PUBLIC_KEY_FILE it uses the pack's public-key.txt, which
# only shows the pack agrees with itself. Prints "OK: ..." (exit 0) or "FAILED: <file>: <why>" (exit 1).
import base64, csv, hashlib, io, json, sys, zipfile
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def H(*parts): return hashlib.sha256(b"".join(parts)).digest()
def fail(file, why): print(f"FAILED: {file}: {why}"); sys.exit(1)
def node(left, right): return H(b"\1", left, right)
def open_note(file, key):  # C2SP signed note: body, blank line, "— name base64(key id || sig)"
    name, key_id, raw = key.split("+", 2); raw = base64.b64decode(raw)
    body, _, sigs = z.read(file).decode().rpartition("\n\n")
    for line in sigs.splitlines():
        dash, signer, sig = (line.split(" ") + ["", ""])[:3]
        if dash == "\u2014" and signer == name and base64.b64decode(sig)[:4].hex() == key_id:
            try: Ed25519PublicKey.from_public_bytes(raw[1:]).verify(base64.b64decode(sig)[4:], (body + "\n").encode())
            except Exception: fail(file, "the signature does not verify")
            return body.split("\n")
    fail(file, f"not signed by {name}+{key_id}")
def walk(f, s, first, proof, pairs):  # RFC 9162 2.1.3.2 and 2.1.4.2, both hashes at once
    fr = sr = first
    for c in proof:
        if s == 0: return None
        if f & 1 or f == s:
            fr, sr = node(c, fr), node(c, sr)
            while not f & 1 and f: f, s = f >> 1, s >> 1
        elif pairs: sr = node(sr, c)
        else: fr = sr = node(fr, c)
        f, s = f >> 1, s >> 1
    return (fr, sr) if s == 0 else None
def consistent(m, n, old, new, proof):
    if m == n or m == 0: return not proof and (m == 0 or old == new)
    path = ([old] if m & (m - 1) == 0 else []) + proof
    f, s = m - 1, n - 1
    while f & 1: f, s = f >> 1, s >> 1
    return bool(path) and walk(f, s, path[0], path[1:], True) == (old, new)

z = zipfile.ZipFile(sys.argv[1])
key = (open(sys.argv[2]).read() if len(sys.argv) > 2 else z.read("public-key.txt").decode()).strip()
fmt, origin, digest = open_note("manifest.sig", key)[:3]
if digest != "sha256 " + hashlib.sha256(z.read("manifest.json")).hexdigest(): fail("manifest.json", "is not the manifest manifest.sig signs")
m = json.loads(z.read("manifest.json")); files = {f["name"]: f for f in m["files"]}
for name in set(z.namelist()) - set(files) - {"manifest.json", "manifest.sig"}: fail(name, "is not in the manifest (added)")
for name, f in files.items():
    if name not in z.namelist() or hashlib.sha256(z.read(name)).hexdigest() != f["sha256"]: fail(name, "is missing or changed")
trees = []
for side in ("start", "end"):
    o, size, root, *ext = open_note(m[side]["file"], key)
    head = next((e.split(" ")[1] for e in ext if e.startswith("chainlog-head ")), None)
    if o != origin or int(size) != m["period"][{"start": "first_seq", "end": "end_seq"}[side]]: fail(m[side]["file"], "is not the period's checkpoint")
    trees.append((int(size), base64.b64decode(root), head))
(m0, r0, h0), (n, r1, h1) = trees; c = json.loads(z.read("proofs/consistency.json"))
if (c["old_size"], c["new_size"]) != (m0, n) or not consistent(m0, n, r0, r1, [bytes.fromhex(h) for h in c["proof"]]): fail("proofs/consistency.json", "does not prove the end tree extends the start tree")
sample = json.loads(z.read("proofs/inclusion-sample.json"))["proofs"]
for p in sample:
    ok = p["tree_size"] == n and p["seq"] < n and walk(p["seq"], n - 1, H(b"\0", bytes.fromhex(p["leaf"])), [bytes.fromhex(h) for h in p["proof"]], False) == (r1, r1)
    if not ok: fail("proofs/inclusion-sample.json", f"the proof of seq {p['seq']} does not lead to the end root")
prev = bytes.fromhex(h0) if h0 else H(b"chainlog/genesis/v1\0", bytes.fromhex(origin.rsplit("/", 1)[1]))
records, events = z.read("events/records.jsonl").splitlines(), z.read("events/events.jsonl").splitlines()
table = list(csv.reader(io.StringIO(z.read("events/events.csv").decode(), newline="")))[1:]
if not len(records) == len(events) == len(table) == n - m0: fail("events/records.jsonl", f"{len(records)} rows, the checkpoints say {n - m0}")
for i, (r, e, t) in enumerate(zip(map(json.loads, records), map(json.loads, events), table)):
    seq = m0 + i; prev = H(b"chainlog/record/v1\0", prev, seq.to_bytes(8, "little"), base64.b64decode(r["record"]))
    if (r["seq"], e["seq"], t[0], r["hash"], e["hash"], t[9]) != (seq, seq, str(seq), prev.hex(), prev.hex(), prev.hex()): fail("events/records.jsonl", f"seq {seq}: the chain breaks")
if n > m0 and prev.hex() != h1: fail("events/records.jsonl", "the last row is not the end checkpoint's head")
print(f"OK: {n - m0} rows (seq {m0} to {n - 1}) of {origin}, chained from the start checkpoint to the end one; consistency and {len(sample)} inclusion proofs verified")
