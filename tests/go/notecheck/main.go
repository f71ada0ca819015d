// notecheck checks chainlog's signed checkpoints and tree hashes with Go's
// golang.org/x/mod/sumdb implementation, an outside implementation of the
// C2SP signed-note format and of RFC 6962 tree hashing.
//
//	notecheck note VERIFIER_KEY_FILE NOTE_FILE   prints the note's text if a signature verifies
//	notecheck root < leaves                      prints the RFC 6962 root over hex leaf data, one per line
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type hashes []tlog.Hash

func (h hashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = h[x]
	}
	return out, nil
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
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
