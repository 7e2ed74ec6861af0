package wal

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// Hand-built pgoutput messages (protocol 2, outside a stream) for the fuzz seeds and
// the malformed-input tests.
func pgoBegin() []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, 0x100) // final LSN
	b = binary.BigEndian.AppendUint64(b, 0)     // commit time
	return binary.BigEndian.AppendUint32(b, 7)  // xid
}

func pgoRelation() []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, 16384)
	b = append(b, "public\x00users\x00"...)
	b = append(b, 'f')                      // replica identity full
	b = binary.BigEndian.AppendUint16(b, 2) // columns
	for _, name := range []string{"id", "password_hash"} {
		b = append(b, 1)
		b = append(b, name+"\x00"...)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xffffffff)
	}
	return b
}

func pgoTuple(values ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(values)))
	for _, v := range values {
		b = append(b, 't')
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

func pgoUpdate(old, new []string) []byte {
	b := []byte{'U'}
	b = binary.BigEndian.AppendUint32(b, 16384)
	b = append(b, 'O')
	b = append(b, pgoTuple(old...)...)
	b = append(b, 'N')
	return append(b, pgoTuple(new...)...)
}

func pgoCommit() []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, 0x100) // commit LSN
	b = binary.BigEndian.AppendUint64(b, 0x180) // end LSN
	return binary.BigEndian.AppendUint64(b, 0)  // commit time
}

func testDecoder() *decoder {
	return newDecoder(map[string][]string{"public.users": {"password_hash"}}, nil)
}

func TestDecodeWellFormedTransaction(t *testing.T) {
	d := testDecoder()
	for _, m := range [][]byte{pgoBegin(), pgoRelation(), pgoUpdate([]string{"1", "a"}, []string{"1", "b"})} {
		if done, _, err := d.handle(m); err != nil || done != nil {
			t.Fatalf("handle %q: got %v, %v, want nothing yet", m[0], done, err)
		}
	}
	done, _, err := d.handle(pgoCommit())
	if err != nil || done == nil || done.end != 0x180 {
		t.Fatalf("commit: got %+v, %v, want a transaction ending at 0/180", done, err)
	}
	evs, _ := events(done.agg, "app", done.commitTime, uint64(done.end))
	if len(evs) != 1 || evs[0].Rows != 1 || len(evs[0].Changed) != 1 || evs[0].Changed[0] != "password_hash" {
		t.Errorf("got %+v, want one UPDATE of 1 row changing password_hash", evs)
	}
}

// pglogrepl trusts the lengths inside a message: a tuple that claims more columns than
// it holds must be an error that says so, not a panic.
func TestDecodeMalformed(t *testing.T) {
	update := pgoUpdate([]string{"1", "a"}, []string{"1", "b"})
	for name, msg := range map[string][]byte{
		"empty":                 {},
		"truncated begin":       pgoBegin()[:9],
		"truncated update":      update[:len(update)-3],
		"column count too high": append(pgoUpdate([]string{"1"}, nil)[:8], 0xff, 0xff),
		// A 4 GiB column length: pglogrepl would allocate it before finding it missing.
		"column length too high":     append(pgoUpdate(nil, nil)[:8], 0, 1, 't', 0xff, 0xff, 0xff, 0xff, 'x'),
		"truncate of 2^32 relations": {'T', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1},
		"unknown type":               {'?', 1, 2},
		"commit without begin":       pgoCommit(),
	} {
		t.Run(name, func(t *testing.T) {
			d := testDecoder()
			if _, _, err := d.handle(pgoRelation()); err != nil {
				t.Fatal(err)
			}
			done, nonTx, err := d.handle(msg)
			if !errors.Is(err, errMalformed) || done != nil || nonTx != nil {
				t.Fatalf("got %v, %v, %v, want only an error wrapping errMalformed", done, nonTx, err)
			}
			if !strings.Contains(err.Error(), "pgoutput") {
				t.Errorf("error %q does not say what was wrong", err)
			}
		})
	}
}

// FuzzDecode feeds arbitrary messages to a decoder that has seen a Begin and a
// Relation, inside and outside a stream: it must never panic (handle recovers from
// pglogrepl's, which the race and fuzz runs would report otherwise as a crash of the
// decoder's own code), errors must wrap errMalformed, and whatever it finishes must
// turn into sane events. Row changes, which handle parses in place, must also get the
// verdict, fields and aggregates pglogrepl gets (see checkParseChange).
func FuzzDecode(f *testing.F) {
	for _, m := range [][]byte{
		pgoBegin(), pgoRelation(), pgoCommit(),
		pgoUpdate([]string{"1", "a"}, []string{"1", "b"}),
		{'M', 0, 0, 0, 0, 0, 0, 0, 0, 1, 'p', 'g', 't', 'r', 'i', 'p', 'w', 'i', 'r', 'e', 0, 0, 0, 0, 1, 'x'},
		{'S', 0, 0, 0, 7, 1}, {'E'}, {'A', 0, 0, 0, 7, 0, 0, 0, 7},
	} {
		f.Add(m, false)
		f.Add(m, true)
	}
	for _, s := range changeSeeds() {
		f.Add(s.data, s.inStream)
	}
	f.Fuzz(func(t *testing.T, msg []byte, inStream bool) {
		if len(msg) > 0 && (msg[0] == 'I' || msg[0] == 'U' || msg[0] == 'D') {
			checkParseChange(t, msg, inStream)
			checkHandleMatchesReference(t, [][]byte{msg, pgoCommit()}, inStream)
		}
		d := testDecoder()
		for _, m := range [][]byte{pgoBegin(), pgoRelation()} {
			if _, _, err := d.handle(m); err != nil {
				t.Fatal(err)
			}
		}
		d.inStream = inStream
		for _, m := range [][]byte{msg, pgoCommit()} {
			done, nonTx, err := d.handle(m)
			if err != nil {
				if !errors.Is(err, errMalformed) || done != nil || nonTx != nil {
					t.Fatalf("got %v, %v, %v, want only an error wrapping errMalformed", done, nonTx, err)
				}
				continue
			}
			if done != nil {
				evs, _ := events(done.agg, "app", done.commitTime, uint64(done.end))
				for _, e := range evs {
					if e.Rows < 0 || e.Relation == "" && e.MessagePrefix == "" {
						t.Fatalf("nonsense event %+v", e)
					}
				}
			}
		}
	})
}
