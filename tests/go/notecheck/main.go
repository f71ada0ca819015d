// notecheck checks chainlog's signed checkpoints and tree hashes with Go's
// golang.org/x/mod/sumdb implementation, an outside implementation of the
// C2SP signed-note format and of RFC 6962 tree hashing.
//
//	notecheck note VERIFIER_KEY_FILE NOTE_FILE   prints the note's text if a signature verifies
//	notecheck cosigned LOG_KEY NOTE WITNESS_KEY…  checks the log's signature and every witness's
//	                                             C2SP tlog-cosignature v1 (type 0x04); prints the
//	                                             text and one "cosigned NAME TIME" line per witness
//	notecheck root < leaves                      prints the RFC 6962 root over hex leaf data, one per line
//	notecheck inclusion PROOF_FILE [LOG_DIR]     checks a `chainlog prove inclusion` proof (JSON)
//	notecheck consistency PROOF_FILE [LOG_DIR]   checks a `chainlog prove consistency` proof (JSON)
//	notecheck tiles LOG_DIR < leaves             checks every tile file under LOG_DIR/tile
//
// inclusion and consistency check the proof with tlog.CheckRecord or
// tlog.CheckTree, then make the same proof with tlog.ProveRecord or
// tlog.ProveTree and require it to be identical. The hashes for that come
// from the leaves on stdin, or, with LOG_DIR, from chainlog's tile files
// read through tlog.TileHashReader, which authenticates every tile it reads
// against the proof's (new) root. tiles recomputes each tile file's content
// with tlog.ReadTileData from the leaves and compares it byte for byte.
// Chainlog's tile paths are C2SP tlog-tiles paths: Go's tile paths without
// the height element (tile/1/x001/234 for Go's tile/8/1/x001/234), except
// that level-0 tiles are packed 256 to a file: tile/leaves/P holds tiles
// 256P ..= 256P+255 one after the other, 8192 bytes each, as far as known
// (P spelled as a tile index is: tile/leaves/x001/234).
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusionProof struct {
	Seq      int64    `json:"seq"`
	TreeSize int64    `json:"tree_size"`
	Leaf     string   `json:"leaf"`
	Root     string   `json:"root"`
	Proof    []string `json:"proof"`
}

type consistencyProof struct {
	OldSize int64    `json:"old_size"`
	NewSize int64    `json:"new_size"`
	OldRoot string   `json:"old_root"`
	NewRoot string   `json:"new_root"`
	Proof   []string `json:"proof"`
}

func hash(s string) tlog.Hash {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != tlog.HashSize {
		fail(fmt.Errorf("bad hash %q", s))
	}
	var h tlog.Hash
	copy(h[:], b)
	return h
}

func hashList(list []string) []tlog.Hash {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		out[i] = hash(s)
	}
	return out
}

// readLeaves reads hex leaf data from stdin and returns the stored hashes
// of the tree over them, and the number of leaves.
func readLeaves() (hashes, int64) {
	var stored hashes
	n := int64(0)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		data, err := hex.DecodeString(strings.TrimSpace(in.Text()))
		if err != nil {
			fail(err)
		}
		hs, err := tlog.StoredHashes(n, data, stored)
		if err != nil {
			fail(err)
		}
		stored = append(stored, hs...)
		n++
	}
	return stored, n
}

// c2spPath is a tile's path in chainlog's (C2SP) layout.
func c2spPath(t tlog.Tile) string {
	return strings.Replace(t.Path(), "tile/8/", "tile/", 1)
}

// packPath is the path of the leaf pack holding level-0 tile n.
func packPath(n int64) string {
	pack := tlog.Tile{H: 8, L: 0, N: n / 256, W: 256}
	return strings.Replace(pack.Path(), "tile/8/0/", "tile/leaves/", 1)
}

// tileDir reads chainlog's tile files.
type tileDir string

func (d tileDir) Height() int { return 8 }

func (d tileDir) SaveTiles([]tlog.Tile, [][]byte) {}

// ReadTiles serves each tile from the full tile or a partial one at least
// as wide (a wider tile's prefix is the narrower tile).
func (d tileDir) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if t.L == 0 {
			b, err := os.ReadFile(filepath.Join(string(d), packPath(t.N)))
			start := int(t.N%256) * 256 * tlog.HashSize
			if err != nil || len(b) < start+t.W*tlog.HashSize {
				return nil, fmt.Errorf("tile %s: not in %s", c2spPath(t), packPath(t.N))
			}
			out[i] = b[start : start+t.W*tlog.HashSize]
			continue
		}
		full := t
		full.W = 1 << 8
		base := filepath.Join(string(d), c2spPath(full))
		if b, err := os.ReadFile(base); err == nil && len(b) == 256*tlog.HashSize {
			out[i] = b[:t.W*tlog.HashSize]
			continue
		}
		entries, err := os.ReadDir(base + ".p")
		if err != nil {
			return nil, fmt.Errorf("tile %s: %v", c2spPath(t), err)
		}
		var widths []int
		for _, e := range entries {
			if w, err := strconv.Atoi(e.Name()); err == nil && w >= t.W && strconv.Itoa(w) == e.Name() {
				widths = append(widths, w)
			}
		}
		sort.Ints(widths)
		if len(widths) == 0 {
			return nil, fmt.Errorf("no tile %s", c2spPath(t))
		}
		b, err := os.ReadFile(filepath.Join(base+".p", strconv.Itoa(widths[0])))
		if err != nil || len(b) != widths[0]*tlog.HashSize {
			return nil, fmt.Errorf("bad tile %s", c2spPath(t))
		}
		out[i] = b[:t.W*tlog.HashSize]
	}
	return out, nil
}

// source returns where ProveRecord/ProveTree get hashes: the tiles under
// LOG_DIR (authenticated against the tree), or the leaves on stdin.
func source(size int64, root tlog.Hash) tlog.HashReader {
	if len(os.Args) > 3 {
		return tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, tileDir(os.Args[3]))
	}
	stored, n := readLeaves()
	if n < size {
		fail(fmt.Errorf("%d leaves, the proof is for a tree of %d", n, size))
	}
	th, err := tlog.TreeHash(size, stored)
	if err != nil {
		fail(err)
	}
	if th != root {
		fail(fmt.Errorf("the root of the first %d leaves is %v, not the proof's %v", size, th, root))
	}
	return stored
}

func sameHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func readJSON(path string, v any) {
	b, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		fail(err)
	}
}

type hashes []tlog.Hash

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = h[x]
	}
	return out, nil
}

// checkPack compares each level-0 tile in a leaf pack with Go's.
func checkPack(name, path string, stored hashes) error {
	p, err := tlog.ParseTilePath("tile/8/0/" + name)
	if err != nil || p.W != 256 || packPath(p.N*256) != "tile/leaves/"+name {
		return fmt.Errorf("not a leaf pack path")
	}
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(got) == 0 || len(got)%tlog.HashSize != 0 || len(got) > 256*256*tlog.HashSize {
		return fmt.Errorf("%d bytes", len(got))
	}
	for k := 0; k*256*tlog.HashSize < len(got); k++ {
		end := (k + 1) * 256 * tlog.HashSize
		if end > len(got) {
			end = len(got)
		}
		chunk := got[k*256*tlog.HashSize : end]
		t := tlog.Tile{H: 8, L: 0, N: p.N*256 + int64(k), W: len(chunk) / tlog.HashSize}
		want, err := tlog.ReadTileData(t, stored)
		if err != nil {
			return err
		}
		if !bytes.Equal(chunk, want) {
			return fmt.Errorf("tile %s differs from Go's", c2spPath(t))
		}
	}
	return nil
}

// cosigVerifier checks C2SP tlog-cosignature v1 signatures (signature
// type 0x04) for note.Open, written here from the specification: x/mod's
// note package parses the note, picks the verifier by key name and hash,
// and rejects the note if a known key's signature fails; this type builds
// the cosigned message and checks the Ed25519 signature over it.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func newCosigVerifier(vkey string) (*cosigVerifier, error) {
	parts := strings.SplitN(strings.TrimSpace(vkey), "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("malformed witness key %q", vkey)
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, fmt.Errorf("witness key %q is not a type 0x04 Ed25519 key", vkey)
	}
	h := sha256.Sum256(append([]byte(parts[0]+"\n"), raw...))
	hash := binary.BigEndian.Uint32(h[:4])
	if fmt.Sprintf("%08x", hash) != parts[1] {
		return nil, fmt.Errorf("witness key %q: the key hash does not match", vkey)
	}
	return &cosigVerifier{name: parts[0], hash: hash, key: ed25519.PublicKey(raw[1:])}, nil
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }

func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t == 0 || t > 1<<63-1 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	return ed25519.Verify(v.key, signed, sig[8:])
}

// checkCosigned opens a note with the log's key and the witnesses' keys and
// requires a valid signature by each.
func checkCosigned(logKey string, msg []byte, witnessKeys []string) {
	logV, err := note.NewVerifier(strings.TrimSpace(logKey))
	if err != nil {
		fail(err)
	}
	verifiers := []note.Verifier{logV}
	var cosigners []*cosigVerifier
	for _, k := range witnessKeys {
		w, err := newCosigVerifier(k)
		if err != nil {
			fail(err)
		}
		verifiers = append(verifiers, w)
		cosigners = append(cosigners, w)
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	if err != nil {
		fail(err)
	}
	signed := map[string]note.Signature{}
	for _, s := range n.Sigs {
		signed[fmt.Sprintf("%s+%08x", s.Name, s.Hash)] = s
	}
	if _, ok := signed[fmt.Sprintf("%s+%08x", logV.Name(), logV.KeyHash())]; !ok {
		fail(fmt.Errorf("no signature by the log key"))
	}
	fmt.Print(n.Text)
	for _, w := range cosigners {
		s, ok := signed[fmt.Sprintf("%s+%08x", w.name, w.hash)]
		if !ok {
			fail(fmt.Errorf("no cosignature by %s", w.name))
		}
		raw, _ := base64.StdEncoding.DecodeString(s.Base64)
		fmt.Printf("cosigned %s %d\n", w.name, binary.BigEndian.Uint64(raw[4:12]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "notecheck:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: notecheck note KEY NOTE | notecheck root"))
	}
	switch os.Args[1] {
	case "note":
		key, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err)
		}
		msg, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail(err)
		}
		v, err := note.NewVerifier(strings.TrimSpace(string(key)))
		if err != nil {
			fail(err)
		}
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			fail(err)
		}
		fmt.Print(n.Text)
	case "cosigned":
		if len(os.Args) < 5 {
			fail(fmt.Errorf("usage: notecheck cosigned LOG_KEY NOTE WITNESS_KEY..."))
		}
		logKey, err := os.ReadFile(os.Args[2])
		if err != nil {
			fail(err)
		}
		msg, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail(err)
		}
		var witnessKeys []string
		for _, path := range os.Args[4:] {
			k, err := os.ReadFile(path)
			if err != nil {
				fail(err)
			}
			witnessKeys = append(witnessKeys, string(k))
		}
		checkCosigned(string(logKey), msg, witnessKeys)
	case "root":
		var stored hashes
		n := int64(0)
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			data, err := hex.DecodeString(strings.TrimSpace(in.Text()))
			if err != nil {
				fail(err)
			}
			hs, err := tlog.StoredHashes(n, data, stored)
			if err != nil {
				fail(err)
			}
			stored = append(stored, hs...)
			n++
		}
		th, err := tlog.TreeHash(n, stored)
		if err != nil {
			fail(err)
		}
		fmt.Println(hex.EncodeToString(th[:]))
	case "inclusion":
		var p inclusionProof
		readJSON(os.Args[2], &p)
		leaf, err := hex.DecodeString(p.Leaf)
		if err != nil {
			fail(err)
		}
		root, proof := hash(p.Root), tlog.RecordProof(hashList(p.Proof))
		if err := tlog.CheckRecord(proof, p.TreeSize, root, p.Seq, tlog.RecordHash(leaf)); err != nil {
			fail(fmt.Errorf("CheckRecord: %v", err))
		}
		ours, err := tlog.ProveRecord(p.TreeSize, p.Seq, source(p.TreeSize, root))
		if err != nil {
			fail(fmt.Errorf("ProveRecord: %v", err))
		}
		if !sameHashes(ours, proof) {
			fail(fmt.Errorf("ProveRecord made a different proof: %v", ours))
		}
		fmt.Println("ok")
	case "consistency":
		var p consistencyProof
		readJSON(os.Args[2], &p)
		oldRoot, newRoot, proof := hash(p.OldRoot), hash(p.NewRoot), tlog.TreeProof(hashList(p.Proof))
		if err := tlog.CheckTree(proof, p.NewSize, newRoot, p.OldSize, oldRoot); err != nil {
			fail(fmt.Errorf("CheckTree: %v", err))
		}
		ours, err := tlog.ProveTree(p.NewSize, p.OldSize, source(p.NewSize, newRoot))
		if err != nil {
			fail(fmt.Errorf("ProveTree: %v", err))
		}
		if !sameHashes(ours, proof) {
			fail(fmt.Errorf("ProveTree made a different proof: %v", ours))
		}
		fmt.Println("ok")
	case "tiles":
		stored, _ := readLeaves()
		dir := os.Args[2]
		checked := 0
		err := filepath.WalkDir(filepath.Join(dir, "tile"), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || strings.Contains(e.Name(), ".tmp") {
				return err
			}
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			if slash := filepath.ToSlash(rel); strings.HasPrefix(slash, "tile/leaves/") {
				if err := checkPack(strings.TrimPrefix(slash, "tile/leaves/"), path, stored); err != nil {
					return fmt.Errorf("%s: %v", rel, err)
				}
				checked++
				return nil
			}
			t, err := tlog.ParseTilePath(strings.Replace(filepath.ToSlash(rel), "tile/", "tile/8/", 1))
			if err != nil {
				return err
			}
			got, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			want, err := tlog.ReadTileData(t, stored)
			if err != nil {
				return fmt.Errorf("%s: %v", rel, err)
			}
			if !bytes.Equal(got, want) {
				return fmt.Errorf("%s differs from Go's tile", rel)
			}
			checked++
			return nil
		})
		if err != nil {
			fail(err)
		}
		fmt.Println(checked)
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
