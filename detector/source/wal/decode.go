package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgtripwire/pgtripwire/model"
)

// Operations of WAL events, named as the statements that cause them.
const (
	OperationInsert   = "INSERT"
	OperationUpdate   = "UPDATE"
	OperationDelete   = "DELETE"
	OperationTruncate = "TRUNCATE"
	// OperationMessage is a logical decoding message (pg_logical_emit_message) whose
	// prefix starts with MessagePrefix.
	OperationMessage = "MESSAGE"
)

// MessagePrefix selects the logical decoding messages that become events.
const MessagePrefix = "pgtripwire"

// relation is what the decoder keeps of a RelationMessage: names only. The strings are
// copies (pglogrepl decodes them with string(bytes)), so they outlive the receive buffer.
type relation struct {
	name      string   // schema-qualified
	columns   []string // in tuple order
	sensitive []bool   // per column: is it a sensitive column of a sensitive table
	// lastSensitive is the index of the last sensitive column + 1: an update's tuples
	// are walked no further.
	lastSensitive int
	watched       bool // the table is a sensitive table
}

// counts aggregates one transaction's changes to one relation. It holds no row data, so
// memory does not grow with the size of the transaction.
type counts struct {
	inserts, updates, deletes, truncates int64
	changed                              map[string]bool // sensitive columns seen changing
	// unknownUpdates counts updates whose old values were not sent (REPLICA IDENTITY is
	// not FULL, or an old value was an unchanged TOAST pointer): for them, which
	// sensitive columns changed is unknown.
	unknownUpdates int64
}

func (c *counts) add(o *counts) {
	c.inserts += o.inserts
	c.updates += o.updates
	c.deletes += o.deletes
	c.truncates += o.truncates
	c.unknownUpdates += o.unknownUpdates
	for col := range o.changed {
		c.changed[col] = true
	}
}

// txn is the aggregate of one transaction (or, while streaming, one subtransaction)
// over the sensitive tables, plus the events of its pgtripwire messages.
type txn struct {
	rels     map[string]*counts // by schema-qualified relation name
	messages []message          // in order; Time, LSN and Database are set at commit
}

// message is the event of a pgtripwire logical decoding message, with what is left to
// finish it when it is handed over (nil: nothing).
type message struct {
	ev     model.Event
	finish Finish
}

func newTxn() *txn { return &txn{rels: make(map[string]*counts)} }

func (t *txn) rel(name string) *counts {
	c := t.rels[name]
	if c == nil {
		c = &counts{changed: make(map[string]bool)}
		t.rels[name] = c
	}
	return c
}

func (t *txn) merge(o *txn) {
	for name, c := range o.rels {
		t.rel(name).add(c)
	}
	t.messages = append(t.messages, o.messages...)
}

// decoder turns pgoutput messages into per-transaction aggregates. It is not safe for
// concurrent use; the session goroutine owns it. Nothing it keeps aliases a message's
// bytes: pglogrepl's parsed messages point into the receive buffer, which the next
// receive overwrites.
type decoder struct {
	tables    map[string][]string // sensitive table → columns
	messages  MessageDecoder      // nil: every pgtripwire message is a source=wal MESSAGE event
	relations map[uint32]*relation

	cur *txn // the open non-streamed transaction (Begin..Commit), nil outside one

	inStream  bool
	streamXid uint32                     // top-level xid of the open stream block
	streams   map[uint32]map[uint32]*txn // top-level xid → (sub)xid → aggregate

	onStreamStart func() // called per stream block received; may be nil
}

func newDecoder(tables map[string][]string, messages MessageDecoder) *decoder {
	return &decoder{
		tables:    tables,
		messages:  messages,
		relations: make(map[uint32]*relation),
		streams:   make(map[uint32]map[uint32]*txn),
	}
}

// inFlight reports whether a transaction has been started but not finished: while it
// is, the slot must not be confirmed past its start.
func (d *decoder) inFlight() bool { return d.cur != nil || len(d.streams) > 0 }

// finished is a transaction whose commit was decoded.
type finished struct {
	end        pglogrepl.LSN // the transaction's end LSN: what may be confirmed once handled
	commitTime time.Time
	agg        *txn
}

// nonTransactional is a pgtripwire logical decoding message emitted outside any
// transaction's visibility (pg_logical_emit_message(false, …)): it is delivered as soon
// as it is received, whatever becomes of the transaction that emitted it.
type nonTransactional struct {
	lsn pglogrepl.LSN // where the message's WAL record starts
	msg message
}

// errMalformed marks a pgoutput message the decoder could not make sense of.
var errMalformed = errors.New("malformed pgoutput message")

// handle decodes one pgoutput message and keeps what the detector needs: changes and
// transaction boundaries. It returns a finished transaction at Commit/StreamCommit, and
// the event of a non-transactional logical decoding message. A malformed message is an
// error wrapping errMalformed, never a panic.
func (d *decoder) handle(data []byte) (done *finished, nonTx *nonTransactional, err error) {
	if len(data) == 0 {
		return nil, nil, fmt.Errorf("%w: empty", errMalformed)
	}
	switch data[0] {
	case 'I', 'U', 'D':
		// Nearly every message of a busy stream: parsed in place, without pglogrepl
		// (see change).
		c, err := parseChange(data, d.inStream)
		if err != nil {
			return nil, nil, err
		}
		d.applyChange(&c)
		return nil, nil, nil
	}
	msg, err := parse(data, d.inStream)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		// pglogrepl's parsers do not check every length (a tuple's column count is
		// trusted): a truncated or corrupt message must end the session, not the
		// process.
		if r := recover(); r != nil {
			done, nonTx, err = nil, nil, fmt.Errorf("%w: type %q: %v", errMalformed, data[0], r)
		}
	}()
	return d.apply(msg)
}

// parse is pglogrepl.ParseV2 made safe for arbitrary input: its decoders index the
// buffer by lengths read from it, and allocate a column's length before checking it.
// handle parses row changes with parseChange instead; the tests keep parse for them as
// the reference parseChange must agree with.
func parse(data []byte, inStream bool) (msg pglogrepl.Message, err error) {
	if !tuplesFit(data, inStream) {
		return nil, fmt.Errorf("%w: type %q of %d bytes: a tuple is longer than the message", errMalformed, data[0], len(data))
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("%w: type %q of %d bytes: truncated or corrupt (%v)", errMalformed, data[0], len(data), r)
		}
	}()
	msg, err = pglogrepl.ParseV2(data, inStream)
	if err != nil {
		return nil, fmt.Errorf("%w: type %q of %d bytes: %w", errMalformed, data[0], len(data), err)
	}
	return msg, nil
}

// tuplesFit reports whether the tuples of an Insert, Update or Delete message, or the
// relation ids of a Truncate, fit in it, so that no length read from the message is
// allocated before it is known to be there (pglogrepl allocates first; a corrupt
// 4-byte length would cost up to 16 GiB). Messages of other types, and structure it
// does not recognise, are left to pglogrepl.
func tuplesFit(data []byte, inStream bool) bool {
	p := 1 // type
	if inStream {
		p += 4 // xid
	}
	switch data[0] {
	case 'I', 'U', 'D':
		p += 4 // relation id
	case 'T':
		// Relation count, options, then the relation ids, 4 bytes each.
		if len(data) < p+5 {
			return true // too short: pglogrepl says so
		}
		return uint64(binary.BigEndian.Uint32(data[p:]))*4 <= uint64(len(data)-p-5)
	default:
		return true
	}
	// The rest is tuples, each after a tuple type byte (pglogrepl skips the one
	// between an old and a new tuple unchecked). Trailing bytes that are not a whole
	// tuple make the message malformed, which is stricter than pglogrepl.
	for p < len(data) {
		n, ok := tupleLen(data[p+1:])
		if !ok {
			return false
		}
		p += 1 + n
	}
	return true
}

func (d *decoder) apply(msg pglogrepl.Message) (done *finished, nonTx *nonTransactional, err error) {
	switch m := msg.(type) {
	case *pglogrepl.BeginMessage:
		d.cur = newTxn()
	case *pglogrepl.CommitMessage:
		agg := d.cur
		d.cur = nil
		if agg == nil {
			return nil, nil, fmt.Errorf("%w: commit without begin at %s", errMalformed, m.CommitLSN)
		}
		return &finished{end: m.TransactionEndLSN, commitTime: m.CommitTime, agg: agg}, nil, nil
	case *pglogrepl.RelationMessageV2:
		d.relations[m.RelationID] = d.newRelation(&m.RelationMessage)
	case *pglogrepl.TruncateMessageV2:
		for _, id := range m.RelationIDs {
			if t, rel := d.target(m.Xid, id); t != nil {
				t.rel(rel.name).truncates++
			}
		}
	case *pglogrepl.LogicalDecodingMessageV2:
		if !strings.HasPrefix(m.Prefix, MessagePrefix) {
			return nil, nil, nil
		}
		msg := d.message(&m.LogicalDecodingMessage)
		if !m.Transactional {
			// Emitted outside any transaction's visibility: it happened, whatever
			// becomes of the transaction that emitted it. In streaming mode it may
			// carry the xid of the transaction being decoded; it is not part of it.
			return nil, &nonTransactional{lsn: m.LSN, msg: msg}, nil
		}
		if t := d.txnFor(m.Xid); t != nil {
			t.messages = append(t.messages, msg)
		}
	case *pglogrepl.StreamStartMessageV2:
		d.inStream, d.streamXid = true, m.Xid
		if d.onStreamStart != nil {
			d.onStreamStart()
		}
		if d.streams[m.Xid] == nil {
			d.streams[m.Xid] = make(map[uint32]*txn)
		}
	case *pglogrepl.StreamStopMessageV2:
		d.inStream = false
	case *pglogrepl.StreamAbortMessageV2:
		if m.SubXid == m.Xid || m.SubXid == 0 {
			delete(d.streams, m.Xid) // the whole transaction: nothing happened
		} else if subs := d.streams[m.Xid]; subs != nil {
			delete(subs, m.SubXid) // a rolled-back subtransaction's changes never happened
		}
	case *pglogrepl.StreamCommitMessageV2:
		agg := newTxn()
		for _, sub := range d.streams[m.Xid] {
			agg.merge(sub)
		}
		delete(d.streams, m.Xid)
		return &finished{end: m.TransactionEndLSN, commitTime: m.CommitTime, agg: agg}, nil, nil
	}
	return nil, nil, nil
}

// txnFor returns the aggregate a change with xid belongs to: the open transaction, or,
// inside a stream block, the (sub)transaction's own aggregate, so that a subtransaction
// abort can drop exactly its changes.
func (d *decoder) txnFor(xid uint32) *txn {
	if !d.inStream {
		return d.cur
	}
	subs := d.streams[d.streamXid]
	if subs == nil {
		subs = make(map[uint32]*txn)
		d.streams[d.streamXid] = subs
	}
	if xid == 0 {
		xid = d.streamXid
	}
	t := subs[xid]
	if t == nil {
		t = newTxn()
		subs[xid] = t
	}
	return t
}

// target returns the aggregate and relation of a change to a sensitive table, or nil
// for changes to other tables (a publication made by someone else may hold more).
func (d *decoder) target(xid, relID uint32) (*txn, *relation) {
	rel := d.relations[relID]
	if rel == nil || !rel.watched {
		return nil, nil
	}
	t := d.txnFor(xid)
	if t == nil {
		return nil, nil
	}
	return t, rel
}

func (d *decoder) newRelation(m *pglogrepl.RelationMessage) *relation {
	// Quoted as the configuration (and the catalog) quote it: public."user", "Sales".orders.
	name := model.QuoteIdent(m.Namespace) + "." + model.QuoteIdent(m.RelationName)
	cols, watched := d.tables[name]
	rel := &relation{name: name, watched: watched}
	for i, c := range m.Columns {
		rel.columns = append(rel.columns, c.Name)
		sensitive := watched && slices.Contains(cols, c.Name)
		rel.sensitive = append(rel.sensitive, sensitive)
		if sensitive {
			rel.lastSensitive = i + 1
		}
	}
	return rel
}

// events turns a committed transaction's aggregate into events: one per (sensitive
// relation, operation kind present), in a stable order, then one per message. finish
// holds, at the index of a message's event, what is left to finish it; it is nil when
// nothing is.
func events(agg *txn, database string, at time.Time, end uint64) (evs []model.Event, finish []Finish) {
	if len(agg.rels) == 0 && len(agg.messages) == 0 {
		return nil, nil
	}
	for _, name := range slices.Sorted(maps.Keys(agg.rels)) {
		c := agg.rels[name]
		base := model.Event{
			Time:     at,
			LSN:      end,
			Source:   Name,
			Database: database,
			Relation: name,
			Calls:    1,
			Complete: true,
		}
		for _, op := range []struct {
			name string
			rows int64
		}{
			{OperationInsert, c.inserts},
			{OperationUpdate, c.updates},
			{OperationDelete, c.deletes},
			{OperationTruncate, c.truncates},
		} {
			if op.rows == 0 {
				continue
			}
			ev := base
			ev.Operation, ev.Rows = op.name, op.rows
			if op.name == OperationUpdate {
				if len(c.changed) > 0 {
					ev.Changed = slices.Sorted(maps.Keys(c.changed))
				}
				ev.Complete = c.unknownUpdates == 0
			}
			evs = append(evs, ev)
		}
	}
	total := len(evs) + len(agg.messages)
	for _, m := range agg.messages {
		if m.finish != nil {
			if finish == nil {
				finish = make([]Finish, total)
			}
			finish[len(evs)] = m.finish
		}
		evs = append(evs, stamp(m.ev, database, at, end))
	}
	return evs, finish
}

// stamp completes a message event with what only the stream knows; what a
// MessageDecoder set is kept.
func stamp(ev model.Event, database string, at time.Time, lsn uint64) model.Event {
	if ev.Time.IsZero() {
		ev.Time = at
	}
	if ev.Database == "" {
		ev.Database = database
	}
	if ev.Source == "" {
		ev.Source = Name
	}
	ev.LSN = lsn
	return ev
}

// message is the event of a pgtripwire logical decoding message: what the
// MessageDecoder makes of it, or by default a source=wal MESSAGE event that carries the
// prefix but not the content, which could hold anything. m's bytes alias the receive
// buffer; the decoder is called before the next receive and must not keep them.
func (d *decoder) message(m *pglogrepl.LogicalDecodingMessage) message {
	if d.messages != nil {
		if ev, finish, ok := d.messages(m.Prefix, m.Content, m.Transactional); ok {
			return message{ev: ev, finish: finish}
		}
	}
	return message{ev: model.Event{
		Source:        Name,
		Operation:     OperationMessage,
		MessagePrefix: m.Prefix,
		Rows:          1,
		Calls:         1,
		Complete:      true,
	}}
}
