package canary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"

	"github.com/pgtripwire/pgtripwire/model"
)

// KindRead is the model.Kind of a canary row visit (a message from the canary
// function). Object is the canary ID ("public.users#100017"), Relation its table, Role
// the session user, ClientAddr, Application and PID the visiting session (the leader of
// a parallel query), QueryID the statement's query id when compute_query_id is on.
// Once classified (Classifier), Operation, SensitiveRead, SensitiveReferenced, Access,
// Shapes and Complete are the verdict on the visiting statement for Relation, and
// Statement its redacted text: a visit whose statement returns none of Relation's
// sensitive columns (Complete and SensitiveRead empty) passed over the row without
// returning it.
const KindRead = "canary_read"

// maxStatementChars bounds the statement text a message carries, in characters: JSON
// escapes a character into at most 6 bytes, so a message stays within maxMessage. A
// longer text is cut and marked, and its visit cannot be cleared.
const maxStatementChars = "16384"

// message is the JSON the canary function emits (functionSQL). Version 1; Statement,
// StatementTruncated and TriggerDepth were added without a version change, so that a
// detector of the previous version still reads the function's messages, and a message
// of the previous version's function (without them) still reads as a visit by a
// statement nobody can classify.
type message struct {
	V                  *int    `json:"v"`
	Relation           string  `json:"relation"`
	Key                *string `json:"key"`
	Role               string  `json:"role"`
	ClientAddr         *string `json:"client_addr"`
	Application        *string `json:"application"`
	PID                *int64  `json:"pid"`
	Database           string  `json:"database"`
	QueryID            *int64  `json:"query_id"`
	Statement          *string `json:"statement"`
	StatementTruncated *bool   `json:"statement_truncated"`
	TriggerDepth       *int64  `json:"trigger_depth"`
}

// maxMessage bounds what Decode parses: the function's messages are a few hundred
// bytes plus the statement, at most maxStatementChars escaped.
const maxMessage = 128 << 10

// Visit is a decoded canary message: the event, not yet classified, and what the
// message says about the statement that visited the row.
type Visit struct {
	// Event is the canary_read event, with Complete false: the statement has not been
	// classified.
	Event model.Event
	// Statement is the text of the visiting statement (current_query()), literals
	// included: classify it in memory, never log, store or emit it (redact.Statement
	// for an event). "" when the message has none (HasStatement false).
	Statement string
	// HasStatement is false for a message of the previous version's function, or when
	// the server had no text for the statement: the visit cannot be classified.
	HasStatement bool
	// Truncated says Statement was cut at maxStatementChars: what was cut off may read
	// more.
	Truncated bool
	// TriggerDepth is pg_trigger_depth() at the visit: above zero, a trigger made it,
	// and Statement is the statement that set the trigger off, not the one that read.
	TriggerDepth int64
}

// Decode decodes a logical decoding message of the canary function. It returns ok
// false, and no error, for a message with another prefix. For a canary message whose
// content is not what the canary function emits it returns ok true and an error saying
// what is wrong (never quoting the statement); it never panics. The event's Time and
// LSN are left for the stream to set.
func Decode(prefix string, content []byte) (v Visit, ok bool, err error) {
	if prefix != MessagePrefix {
		return Visit{}, false, nil
	}
	if len(content) > maxMessage {
		return Visit{}, true, fmt.Errorf("canary message: %d bytes, want at most %d", len(content), maxMessage)
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return Visit{}, true, fmt.Errorf("canary message: not a JSON object of the expected shape: %w", err)
	}
	if dec.More() {
		return Visit{}, true, errors.New("canary message: trailing data after the JSON object")
	}
	switch {
	case m.V == nil:
		return Visit{}, true, errors.New("canary message: no version (v)")
	case *m.V != 1:
		return Visit{}, true, fmt.Errorf("canary message: version %d, want 1", *m.V)
	case m.Relation == "":
		return Visit{}, true, errors.New("canary message: no relation")
	case m.Key == nil:
		return Visit{}, true, errors.New("canary message: no key")
	case m.Role == "":
		return Visit{}, true, errors.New("canary message: no role")
	case m.PID == nil:
		return Visit{}, true, errors.New("canary message: no pid")
	case *m.PID <= 0 || *m.PID > math.MaxInt32:
		return Visit{}, true, fmt.Errorf("canary message: pid %d out of range", *m.PID)
	}
	v.Event = model.Event{
		Source:   Source,
		Kind:     KindRead,
		Object:   canaryID(m.Relation, *m.Key),
		Relation: m.Relation,
		Database: m.Database,
		Role:     m.Role,
		PID:      int32(*m.PID),
		Rows:     1,
		Calls:    1,
	}
	if m.ClientAddr != nil {
		addr, err := netip.ParseAddr(*m.ClientAddr)
		if err != nil {
			return Visit{}, true, fmt.Errorf("canary message: client_addr %q is not an IP address", *m.ClientAddr)
		}
		v.Event.ClientAddr = addr.String()
	}
	if m.Application != nil {
		v.Event.Application = *m.Application
	}
	if m.QueryID != nil {
		v.Event.QueryID = *m.QueryID
	}
	if m.Statement != nil {
		v.Statement, v.HasStatement = *m.Statement, true
	}
	v.Truncated = m.StatementTruncated != nil && *m.StatementTruncated
	if m.TriggerDepth != nil {
		v.TriggerDepth = *m.TriggerDepth
	}
	return v, true, nil
}

// unreadable is the event of a canary message that cannot be decoded: someone made the
// canary function, or something posing as it, speak, and an unreadable message is
// never evidence of safety.
func unreadable(prefix string) model.Event {
	return model.Event{Source: Source, Kind: KindRead, Rows: 1, Calls: 1, MessagePrefix: prefix}
}
