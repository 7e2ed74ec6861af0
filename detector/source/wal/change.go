package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
)

// change is a pgoutput Insert, Update or Delete message parsed in place. Row changes
// are nearly all of a busy stream, and pglogrepl copies every column of every row into
// its own allocation (a TupleDataColumn and its Data), which made parsing the source's
// largest CPU cost: on a machine shared with the walsender, every cycle spent here is
// one the walsender does not get. A change allocates nothing; its tuples alias the
// message and are valid only until the next receive.
type change struct {
	op    byte   // 'I', 'U' or 'D'
	xid   uint32 // the (sub)transaction's xid inside a stream block; 0 outside one
	relID uint32
	// oldType is 'K' (key columns only) or 'O' (the whole old row: REPLICA IDENTITY
	// FULL) when an old tuple was sent, 0 otherwise.
	oldType byte
	// oldTuple and newTuple are validated TupleData, from the column count on; nil
	// when absent (newTuple for a Delete, oldTuple for an Insert or an Update without
	// one).
	oldTuple, newTuple []byte
}

// parseChange parses the Insert, Update or Delete message data (data[0] is its type)
// without copying it. It accepts what pglogrepl accepts once tuplesFit has checked the
// message, with one exception: an Insert of a row without columns, which pglogrepl
// rejects as too short although PostgreSQL sends it for a table without columns. A
// malformed message is an error wrapping errMalformed; every length is checked before
// it is used.
func parseChange(data []byte, inStream bool) (change, error) {
	c := change{op: data[0]}
	body := data[1:]
	if inStream {
		if len(body) < 4 {
			return change{}, malformedChange(data, "no xid")
		}
		c.xid = binary.BigEndian.Uint32(body)
		body = body[4:]
	}
	// Relation id, then tuples, each after a type byte. As tuplesFit did before this
	// parser existed, the tuples must cover the message exactly; a tuple past those
	// the message type has is checked and ignored, as pglogrepl ignores it.
	if len(body) < 5 {
		return change{}, malformedChange(data, "too short")
	}
	c.relID = binary.BigEndian.Uint32(body)
	var kinds [2]byte
	var tuples [2][]byte
	found := 0
	for p := 4; p < len(body); {
		n, ok := tupleLen(body[p+1:])
		if !ok {
			return change{}, malformedChange(data, "a tuple is longer than the message")
		}
		if found < len(tuples) {
			kinds[found], tuples[found] = body[p], body[p+1:p+1+n]
		}
		found++
		p += 1 + n
	}
	switch c.op {
	case 'I':
		if kinds[0] != pglogrepl.UpdateMessageTupleTypeNew {
			return change{}, malformedChange(data, "tuple type is not N")
		}
		c.newTuple = tuples[0]
	case 'U':
		switch kinds[0] {
		case pglogrepl.UpdateMessageTupleTypeKey, pglogrepl.UpdateMessageTupleTypeOld:
			if found < 2 {
				return change{}, malformedChange(data, "an old tuple without a new one")
			}
			// The type byte of the new tuple is not checked: pglogrepl skips it.
			c.oldType, c.oldTuple, c.newTuple = kinds[0], tuples[0], tuples[1]
		case pglogrepl.UpdateMessageTupleTypeNew:
			c.newTuple = tuples[0]
		default:
			return change{}, malformedChange(data, "tuple type is not K, O or N")
		}
	case 'D':
		switch kinds[0] {
		case pglogrepl.DeleteMessageTupleTypeKey, pglogrepl.DeleteMessageTupleTypeOld:
			c.oldType, c.oldTuple = kinds[0], tuples[0]
		default:
			return change{}, malformedChange(data, "tuple type is not K or O")
		}
	default:
		return change{}, malformedChange(data, "not a row change")
	}
	return c, nil
}

func malformedChange(data []byte, what string) error {
	return fmt.Errorf("%w: type %q of %d bytes: %s", errMalformed, data[0], len(data), what)
}

// tupleLen returns the length of the TupleData at the start of b, or false when its
// columns claim more bytes than b holds.
func tupleLen(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	cols, p := int(binary.BigEndian.Uint16(b)), 2
	for range cols {
		if p >= len(b) {
			return 0, false
		}
		kind := b[p]
		p++
		if kind == pglogrepl.TupleDataTypeText || kind == pglogrepl.TupleDataTypeBinary {
			if len(b)-p < 4 {
				return 0, false
			}
			// Compared as uint64: on a 32-bit platform int(n) of a length of 2 GiB
			// or more would be negative and pass the check.
			n := binary.BigEndian.Uint32(b[p:])
			p += 4
			if uint64(n) > uint64(len(b)-p) {
				return 0, false
			}
			p += int(n)
		}
	}
	return p, true
}

// tupleColumns returns the column count of a tuple validated by tupleLen.
func tupleColumns(tuple []byte) int { return int(binary.BigEndian.Uint16(tuple)) }

// column returns the kind and value of the column starting at p in a tuple validated
// by tupleLen, and where the next column starts. The value is nil unless the kind is
// text or binary, as in pglogrepl's TupleDataColumn.
func column(tuple []byte, p int) (kind byte, value []byte, next int) {
	kind = tuple[p]
	p++
	if kind != pglogrepl.TupleDataTypeText && kind != pglogrepl.TupleDataTypeBinary {
		return kind, nil, p
	}
	n := int(binary.BigEndian.Uint32(tuple[p:]))
	p += 4
	return kind, tuple[p : p+n], p + n
}

// applyChange counts a row change to a sensitive table in its transaction's aggregate.
func (d *decoder) applyChange(c *change) {
	t, rel := d.target(c.xid, c.relID)
	if t == nil {
		return
	}
	counts := t.rel(rel.name)
	switch c.op {
	case 'I':
		counts.inserts++
	case 'U':
		updateChanged(counts, rel, c)
	case 'D':
		counts.deletes++
	}
}

// updateChanged records one UPDATE: which sensitive columns changed when the old tuple
// was sent in full (REPLICA IDENTITY FULL), or that it is unknown otherwise. It never
// guesses: a key-only or absent old tuple says nothing about the other columns. It
// walks both tuples in place, up to the last sensitive column.
func updateChanged(counts *counts, rel *relation, c *change) {
	counts.updates++
	if c.oldType != pglogrepl.UpdateMessageTupleTypeOld || c.oldTuple == nil || c.newTuple == nil ||
		tupleColumns(c.oldTuple) != len(rel.columns) || tupleColumns(c.newTuple) != len(rel.columns) {
		counts.unknownUpdates++
		return
	}
	unknown := false
	po, pn := 2, 2 // past the column counts
	for i := range rel.lastSensitive {
		var oldKind, newKind byte
		var oldValue, newValue []byte
		oldKind, oldValue, po = column(c.oldTuple, po)
		newKind, newValue, pn = column(c.newTuple, pn)
		if !rel.sensitive[i] {
			continue
		}
		switch {
		case newKind == pglogrepl.TupleDataTypeToast:
			// Unchanged TOAST value: the new row keeps the old value.
		case oldKind == pglogrepl.TupleDataTypeToast:
			unknown = true // the old value was not sent: cannot compare
		case oldKind != newKind || !bytes.Equal(oldValue, newValue):
			counts.changed[rel.columns[i]] = true
		}
	}
	if unknown {
		counts.unknownUpdates++
	}
}
