package wal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"

	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

// referenceHandle is what handle did before parseChange: every message, row changes
// included, parsed by pglogrepl (through parse, which adds the length checks and the
// recover), and row changes counted from pglogrepl's copies of the columns. The
// differential tests hold handle to it.
func referenceHandle(d *decoder, data []byte) (done *finished, nonTx *nonTransactional, err error) {
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", errMalformed)
	}
	msg, err := parse(data, d.inStream)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			done, nonTx, err = nil, nil, fmt.Errorf("%w: type %q: %v", errMalformed, data[0], r)
		}
	}()
	switch m := msg.(type) {
	case *pglogrepl.InsertMessageV2:
		if t, rel := d.target(m.Xid, m.RelationID); t != nil {
			t.rel(rel.name).inserts++
		}
	case *pglogrepl.UpdateMessageV2:
		if t, rel := d.target(m.Xid, m.RelationID); t != nil {
			referenceUpdate(t.rel(rel.name), rel, &m.UpdateMessage)
		}
	case *pglogrepl.DeleteMessageV2:
		if t, rel := d.target(m.Xid, m.RelationID); t != nil {
			t.rel(rel.name).deletes++
		}
	default:
		return d.apply(msg)
	}
	return nil, nil, nil
}

// referenceUpdate is the update comparison as it was written over pglogrepl's
// TupleData.
func referenceUpdate(c *counts, rel *relation, m *pglogrepl.UpdateMessage) {
	c.updates++
	if m.OldTupleType != pglogrepl.UpdateMessageTupleTypeOld || m.OldTuple == nil || m.NewTuple == nil ||
		len(m.OldTuple.Columns) != len(rel.columns) || len(m.NewTuple.Columns) != len(rel.columns) {
		c.unknownUpdates++
		return
	}
	unknown := false
	for i, sensitive := range rel.sensitive {
		if !sensitive {
			continue
		}
		oldCol, newCol := m.OldTuple.Columns[i], m.NewTuple.Columns[i]
		switch {
		case newCol.DataType == pglogrepl.TupleDataTypeToast:
		case oldCol.DataType == pglogrepl.TupleDataTypeToast:
			unknown = true
		case oldCol.DataType != newCol.DataType || !bytes.Equal(oldCol.Data, newCol.Data):
			c.changed[rel.columns[i]] = true
		}
	}
	if unknown {
		c.unknownUpdates++
	}
}

// zeroColumnInsert reports whether data is an Insert of a row without columns and
// nothing else: the one row change parseChange accepts and pglogrepl does not.
func zeroColumnInsert(data []byte, inStream bool) bool {
	body := data[1:]
	if inStream {
		if len(body) < 4 {
			return false
		}
		body = body[4:]
	}
	return data[0] == 'I' && len(body) == 7 && body[4] == 'N' && body[5] == 0 && body[6] == 0
}

type testColumn struct {
	kind  byte
	value string
}

// columnsOf lists the columns of a tuple validated by tupleLen, as column walks them.
func columnsOf(tuple []byte) []testColumn {
	if tuple == nil {
		return nil
	}
	cols := make([]testColumn, 0, tupleColumns(tuple))
	for p, i := 2, 0; i < tupleColumns(tuple); i++ {
		var kind byte
		var value []byte
		kind, value, p = column(tuple, p)
		cols = append(cols, testColumn{kind, string(value)})
	}
	return cols
}

func pglogreplColumns(tuple *pglogrepl.TupleData) []testColumn {
	if tuple == nil {
		return nil
	}
	cols := make([]testColumn, 0, len(tuple.Columns))
	for _, c := range tuple.Columns {
		cols = append(cols, testColumn{c.DataType, string(c.Data)})
	}
	return cols
}

// checkParseChange holds parseChange to pglogrepl on the row change data: the same
// verdict, and when both accept it the same fields and columns. It reports whether
// the two agreed, which they do on everything but a zero-column Insert.
func checkParseChange(t *testing.T, data []byte, inStream bool) bool {
	t.Helper()
	got, err := parseChange(data, inStream)
	ref, refErr := parse(data, inStream)
	if err != nil && !errors.Is(err, errMalformed) {
		t.Fatalf("parseChange(%q, %v): error %v does not wrap errMalformed", data, inStream, err)
	}
	if (err == nil) != (refErr == nil) {
		if err == nil && zeroColumnInsert(data, inStream) {
			return false
		}
		t.Fatalf("parseChange(%q, %v): got error %v, pglogrepl's %v", data, inStream, err, refErr)
	}
	if err != nil {
		return true
	}
	type fields struct {
		op            byte
		xid, relID    uint32
		oldType       byte
		oldCol, newCo []testColumn
	}
	want := fields{op: data[0]}
	switch m := ref.(type) {
	case *pglogrepl.InsertMessageV2:
		want.xid, want.relID, want.newCo = m.Xid, m.RelationID, pglogreplColumns(m.Tuple)
	case *pglogrepl.UpdateMessageV2:
		want.xid, want.relID, want.oldType = m.Xid, m.RelationID, m.OldTupleType
		want.oldCol, want.newCo = pglogreplColumns(m.OldTuple), pglogreplColumns(m.NewTuple)
	case *pglogrepl.DeleteMessageV2:
		want.xid, want.relID, want.oldType = m.Xid, m.RelationID, m.OldTupleType
		want.oldCol = pglogreplColumns(m.OldTuple)
	default:
		t.Fatalf("pglogrepl parsed %q as %T", data, ref)
	}
	gotFields := fields{got.op, got.xid, got.relID, got.oldType, columnsOf(got.oldTuple), columnsOf(got.newTuple)}
	if !reflect.DeepEqual(gotFields, want) {
		t.Fatalf("parseChange(%q, %v):\ngot  %+v\nwant %+v (pglogrepl)", data, inStream, gotFields, want)
	}
	return true
}

// checkSameAggregates fails unless the two decoders hold the same open transaction and
// streamed aggregates.
func checkSameAggregates(t *testing.T, got, want *decoder) {
	t.Helper()
	if !reflect.DeepEqual(got.cur, want.cur) || !reflect.DeepEqual(got.streams, want.streams) {
		t.Fatalf("aggregates differ:\ngot  %s\nwant %s (pglogrepl)", dumpDecoder(got), dumpDecoder(want))
	}
}

func dumpDecoder(d *decoder) string {
	var b strings.Builder
	dumpTxn := func(t *txn) {
		if t == nil {
			b.WriteString("<nil>")
			return
		}
		for name, c := range t.rels {
			fmt.Fprintf(&b, "%s:%+v ", name, *c)
		}
	}
	b.WriteString("cur=")
	dumpTxn(d.cur)
	for xid, subs := range d.streams {
		for sub, t := range subs {
			fmt.Fprintf(&b, " stream %d/%d=", xid, sub)
			dumpTxn(t)
		}
	}
	return b.String()
}

// pgoChange builds a row change: type, optional xid, relation 16384, then the tuples
// after their type bytes.
func pgoChange(op byte, xid *uint32, parts ...any) []byte {
	b := []byte{op}
	if xid != nil {
		b = binary.BigEndian.AppendUint32(b, *xid)
	}
	b = binary.BigEndian.AppendUint32(b, 16384)
	for _, p := range parts {
		switch p := p.(type) {
		case byte:
			b = append(b, p)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

// pgoColumns builds a TupleData from (kind, value) pairs; the value is sent only for
// text and binary columns.
func pgoColumns(cols ...testColumn) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(cols)))
	for _, c := range cols {
		b = append(b, c.kind)
		if c.kind == 't' || c.kind == 'b' {
			b = binary.BigEndian.AppendUint32(b, uint32(len(c.value)))
			b = append(b, c.value...)
		}
	}
	return b
}

// changeSeeds are row changes covering each branch of the update comparison, inside
// and outside a stream block: for the differential tests and the fuzz corpus.
func changeSeeds() (out []struct {
	name     string
	data     []byte
	inStream bool
}) {
	id := testColumn{'t', "1"}
	hashA, hashB := testColumn{'t', "a"}, testColumn{'t', "b"}
	null, toast := testColumn{'n', ""}, testColumn{'u', ""}
	binA, empty := testColumn{'b', "a"}, testColumn{'t', ""}
	xid := uint32(9)
	for _, c := range []struct {
		name  string
		parts []any
	}{
		{"insert", []any{byte('N'), pgoColumns(id, hashA)}},
		{"insert zero columns", []any{byte('N'), pgoColumns()}},
		{"insert zero columns, trailing tuple", []any{byte('N'), pgoColumns(), byte('N'), pgoColumns()}},
		{"insert as K", []any{byte('K'), pgoColumns(id, hashA)}},
		{"update full changed", []any{byte('O'), pgoColumns(id, hashA), byte('N'), pgoColumns(id, hashB)}},
		{"update full unchanged", []any{byte('O'), pgoColumns(id, hashA), byte('N'), pgoColumns(id, hashA)}},
		{"update full new toast", []any{byte('O'), pgoColumns(id, hashA), byte('N'), pgoColumns(id, toast)}},
		{"update full old toast", []any{byte('O'), pgoColumns(id, toast), byte('N'), pgoColumns(id, hashB)}},
		{"update full null to value", []any{byte('O'), pgoColumns(id, null), byte('N'), pgoColumns(id, hashA)}},
		{"update full null to null", []any{byte('O'), pgoColumns(id, null), byte('N'), pgoColumns(id, null)}},
		{"update full empty to null", []any{byte('O'), pgoColumns(id, empty), byte('N'), pgoColumns(id, null)}},
		{"update full text to binary", []any{byte('O'), pgoColumns(id, hashA), byte('N'), pgoColumns(id, binA)}},
		{"update full binary", []any{byte('O'), pgoColumns(id, binA), byte('N'), pgoColumns(id, testColumn{'b', "b"})}},
		{"update full unknown kind", []any{byte('O'), pgoColumns(id, testColumn{'x', ""}), byte('N'), pgoColumns(id, hashA)}},
		{"update full column count differs", []any{byte('O'), pgoColumns(id), byte('N'), pgoColumns(id, hashA)}},
		{"update key", []any{byte('K'), pgoColumns(id, null), byte('N'), pgoColumns(id, hashB)}},
		{"update new only", []any{byte('N'), pgoColumns(id, hashB)}},
		{"update old without new", []any{byte('O'), pgoColumns(id, hashA)}},
		{"update bad type", []any{byte('X'), pgoColumns(id, hashB)}},
		{"update new type byte not N", []any{byte('O'), pgoColumns(id, hashA), byte('?'), pgoColumns(id, hashB)}},
		{"update trailing tuple", []any{byte('N'), pgoColumns(id, hashB), byte('N'), pgoColumns(id)}},
		{"update trailing byte", []any{byte('N'), pgoColumns(id, hashB), byte('N')}},
		{"delete key", []any{byte('K'), pgoColumns(id, null)}},
		{"delete full", []any{byte('O'), pgoColumns(id, hashA)}},
		{"delete new", []any{byte('N'), pgoColumns(id, hashA)}},
		{"delete without tuple", []any{byte('O')}},
		{"no tuple type", nil},
	} {
		for _, op := range []byte{'I', 'U', 'D'} {
			if !strings.HasPrefix(c.name, map[byte]string{'I': "insert", 'U': "update", 'D': "delete"}[op]) &&
				!strings.HasPrefix(c.name, "no") {
				continue
			}
			out = append(out, struct {
				name     string
				data     []byte
				inStream bool
			}{c.name, pgoChange(op, nil, c.parts...), false}, struct {
				name     string
				data     []byte
				inStream bool
			}{c.name + " in stream", pgoChange(op, &xid, c.parts...), true})
		}
	}
	return out
}

// TestParseChangeMatchesPglogrepl holds the in-place parser and the update comparison
// to pglogrepl and the comparison written over it, seed by seed.
func TestParseChangeMatchesPglogrepl(t *testing.T) {
	for _, s := range changeSeeds() {
		t.Run(s.name, func(t *testing.T) {
			for _, cut := range []int{len(s.data), len(s.data) - 1, len(s.data) / 2} {
				data := s.data[:cut]
				if len(data) == 0 {
					continue
				}
				checkParseChange(t, data, s.inStream)
				checkHandleMatchesReference(t, [][]byte{data}, s.inStream)
			}
		})
	}
}

// checkHandleMatchesReference feeds msgs to two decoders that have seen a Begin (or,
// inStream, a Stream Start of xid 7) and the Relation of pgoRelation: one through
// handle, one through referenceHandle. They must agree on every verdict and
// aggregate, but for a zero-column Insert, which only handle accepts: checking stops
// there.
func checkHandleMatchesReference(t *testing.T, msgs [][]byte, inStream bool) {
	t.Helper()
	got, want := testDecoder(), testDecoder()
	setup := [][]byte{pgoBegin(), pgoRelation()}
	if inStream {
		setup = [][]byte{{'S', 0, 0, 0, 7, 1}, pgoRelation()}
	}
	for _, m := range setup {
		if _, _, err := got.handle(m); err != nil {
			t.Fatal(err)
		}
		if _, _, err := referenceHandle(want, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range msgs {
		gotDone, _, gotErr := got.handle(m)
		wantDone, _, wantErr := referenceHandle(want, m)
		if (gotErr == nil) != (wantErr == nil) {
			if gotErr == nil && len(m) > 0 && zeroColumnInsert(m, got.inStream) {
				return
			}
			t.Fatalf("handle(%q): got error %v, pglogrepl's %v", m, gotErr, wantErr)
		}
		if !reflect.DeepEqual(gotDone, wantDone) {
			t.Fatalf("handle(%q): got %+v, pglogrepl's %+v", m, gotDone, wantDone)
		}
		checkSameAggregates(t, got, want)
	}
}

// TestParseChangeMatchesPglogreplOnRealMessages captures what PostgreSQL's pgoutput
// sends for inserts, updates (REPLICA IDENTITY FULL and DEFAULT, TOAST values left
// unchanged, nulls), deletes, a zero-column table, binary mode and a streamed
// transaction, and holds parseChange, and handle's aggregates, to pglogrepl on them.
func TestParseChangeMatchesPglogreplOnRealMessages(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `CREATE TABLE public.users (id int PRIMARY KEY, email text, username text, password_hash text, note text);
		ALTER TABLE public.users REPLICA IDENTITY FULL,
			ALTER password_hash SET STORAGE EXTERNAL, ALTER note SET STORAGE EXTERNAL;
		CREATE TABLE public.keys (id int PRIMARY KEY, password_hash text);
		CREATE TABLE public.nothing ();
		CREATE PUBLICATION diff FOR TABLE public.users, public.keys, public.nothing`)
	db.Exec(t, `SELECT pg_create_logical_replication_slot('diff_text', 'pgoutput'), pg_create_logical_replication_slot('diff_binary', 'pgoutput')`)
	// A value past the TOAST threshold, stored out of line (STORAGE EXTERNAL) and so
	// sent as 'u' when an update leaves it alone; small enough that the transaction
	// is not streamed.
	big := `(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i)`
	// Logical decoding through SQL reads only flushed WAL, and the test server commits
	// asynchronously: each batch of changes commits synchronously.
	db.Exec(t, `SET synchronous_commit = on;
		INSERT INTO public.users VALUES (1, 'a@example.com', 'a', 'h1', NULL), (2, NULL, 'b', `+big+`, `+big+`);
		INSERT INTO public.keys VALUES (1, 'k1'), (2, 'k2');
		INSERT INTO public.nothing DEFAULT VALUES;
		UPDATE public.users SET password_hash = 'h2' WHERE id = 1;
		UPDATE public.users SET email = 'b@example.com' WHERE id = 2;
		UPDATE public.users SET password_hash = NULL, note = 'n' WHERE id = 1;
		UPDATE public.users SET password_hash = 'h2' WHERE id = 1;
		UPDATE public.keys SET password_hash = 'k3' WHERE id = 1;
		UPDATE public.keys SET id = 3 WHERE id = 2;
		DELETE FROM public.users WHERE id = 2;
		DELETE FROM public.keys WHERE id = 1`)
	// Streamed: a transaction larger than logical_decoding_work_mem, with a
	// subtransaction, decoded while it is set to its minimum below.
	db.Exec(t, `SET synchronous_commit = on;
		BEGIN;
		INSERT INTO public.keys SELECT i, md5(i::text) FROM generate_series(10, 2000) i;
		SAVEPOINT s;
		UPDATE public.users SET password_hash = md5(password_hash) WHERE id = 1;
		UPDATE public.keys SET password_hash = 'x' WHERE id < 100;
		RELEASE SAVEPOINT s;
		DELETE FROM public.keys WHERE id < 50;
		COMMIT`)

	conn := db.Conn(t, "postgres")
	ctx := context.Background()
	if _, err := conn.Exec(ctx, `SET logical_decoding_work_mem = '64kB'`); err != nil {
		t.Fatal(err)
	}
	for _, slot := range []string{"diff_text", "diff_binary"} {
		t.Run(slot, func(t *testing.T) {
			rows, err := conn.Query(ctx, `SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,
				'proto_version', '2', 'publication_names', 'diff', 'messages', 'true', 'streaming', 'on', 'binary', $2)`,
				slot, fmt.Sprint(slot == "diff_binary"))
			if err != nil {
				t.Fatal(err)
			}
			var msgs [][]byte
			for rows.Next() {
				var data []byte
				if err := rows.Scan(&data); err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, data)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			kinds := map[string]int{}
			got := newDecoder(map[string][]string{"public.users": {"email", "password_hash"}, "public.keys": {"password_hash"}}, nil)
			want := newDecoder(got.tables, nil)
			var gotFinished, wantFinished []*finished
			for _, m := range msgs {
				kinds[string(m[0])]++
				if m[0] == 'I' || m[0] == 'U' || m[0] == 'D' {
					if !checkParseChange(t, m, got.inStream) {
						kinds["zero-column insert"]++
					}
					if c, err := parseChange(m, got.inStream); err == nil {
						for _, col := range append(columnsOf(c.oldTuple), columnsOf(c.newTuple)...) {
							kinds["column "+string(col.kind)]++
						}
						if c.oldType == 'O' {
							kinds["full old tuple"]++
						}
					}
				}
				gotDone, _, gotErr := got.handle(m)
				wantDone, _, wantErr := referenceHandle(want, m)
				if gotErr != nil {
					t.Fatalf("handle(%q): %v", m, gotErr)
				}
				if wantErr != nil && !zeroColumnInsert(m, got.inStream) {
					t.Fatalf("pglogrepl on %q: %v", m, wantErr)
				}
				checkSameAggregates(t, got, want)
				if gotDone != nil {
					gotFinished = append(gotFinished, gotDone)
				}
				if wantDone != nil {
					wantFinished = append(wantFinished, wantDone)
				}
			}
			if !reflect.DeepEqual(gotFinished, wantFinished) {
				t.Errorf("finished transactions differ:\ngot  %+v\nwant %+v", gotFinished, wantFinished)
			}
			// The capture must hold what it is meant to cover, or the comparison
			// proves little.
			wantKinds := []string{"B", "C", "I", "U", "D", "S", "c", "zero-column insert", "full old tuple", "column u", "column n", "column t"}
			if slot == "diff_binary" {
				wantKinds[len(wantKinds)-1] = "column b"
			}
			for _, k := range wantKinds {
				if kinds[k] == 0 {
					t.Errorf("captured no %q message (got %v)", k, kinds)
				}
			}
			t.Logf("%d messages: %v", len(msgs), kinds)
		})
	}
}

// TestHandleRowChangeAllocatesNothing: row changes are nearly all of a busy stream;
// parsing and counting one must not allocate (pglogrepl's parser allocated every column
// of every row, the source's largest cost).
func TestHandleRowChangeAllocatesNothing(t *testing.T) {
	id, a, b := testColumn{'t', "1"}, testColumn{'t', "a"}, testColumn{'t', "b"}
	for name, msg := range map[string][]byte{
		"insert":              pgoChange('I', nil, byte('N'), pgoColumns(id, a)),
		"update full changed": pgoChange('U', nil, byte('O'), pgoColumns(id, a), byte('N'), pgoColumns(id, b)),
		"update key":          pgoChange('U', nil, byte('N'), pgoColumns(id, b)),
		"delete":              pgoChange('D', nil, byte('K'), pgoColumns(id, testColumn{'n', ""})),
	} {
		t.Run(name, func(t *testing.T) {
			d := testDecoder()
			for _, m := range [][]byte{pgoBegin(), pgoRelation(), msg} { // the first counts create the aggregate
				if _, _, err := d.handle(m); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			if got := testing.AllocsPerRun(100, func() { _, _, err = d.handle(msg) }); got != 0 || err != nil {
				t.Errorf("handle: %v allocations per call, error %v; want none", got, err)
			}
		})
	}
}
