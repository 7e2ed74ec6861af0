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

// KindRead is the model.Kind of a canary row read (a message from the canary
// function). Object is the canary ID ("public.users#100017"), Relation its table, Role
// the session user, ClientAddr, Application and PID the reading session (the leader of
// a parallel query), QueryID the statement's query id when compute_query_id is on.
const KindRead = "canary_read"

// message is the JSON the canary function emits (functionSQL). Version 1.
type message struct {
	V           *int    `json:"v"`
	Relation    string  `json:"relation"`
	Key         *string `json:"key"`
	Role        string  `json:"role"`
	ClientAddr  *string `json:"client_addr"`
	Application *string `json:"application"`
	PID         *int64  `json:"pid"`
	Database    string  `json:"database"`
	QueryID     *int64  `json:"query_id"`
}

// maxMessage bounds what Decode parses; the function's messages are a few hundred
// bytes.
const maxMessage = 64 << 10

// Decode turns a logical decoding message into a canary read event. It returns ok
// false, and no error, for a message with another prefix. For a canary message whose
// content is not what the canary function emits it returns ok true and an error saying
// what is wrong; it never panics. The event's Time and LSN are left for the stream to
// set.
func Decode(prefix string, content []byte) (ev model.Event, ok bool, err error) {
	if prefix != MessagePrefix {
		return model.Event{}, false, nil
	}
	if len(content) > maxMessage {
		return model.Event{}, true, fmt.Errorf("canary message: %d bytes, want at most %d", len(content), maxMessage)
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return model.Event{}, true, fmt.Errorf("canary message: not a JSON object of the expected shape: %w", err)
	}
	if dec.More() {
		return model.Event{}, true, errors.New("canary message: trailing data after the JSON object")
	}
	switch {
	case m.V == nil:
		return model.Event{}, true, errors.New("canary message: no version (v)")
	case *m.V != 1:
		return model.Event{}, true, fmt.Errorf("canary message: version %d, want 1", *m.V)
	case m.Relation == "":
		return model.Event{}, true, errors.New("canary message: no relation")
	case m.Key == nil:
		return model.Event{}, true, errors.New("canary message: no key")
	case m.Role == "":
		return model.Event{}, true, errors.New("canary message: no role")
	case m.PID == nil:
		return model.Event{}, true, errors.New("canary message: no pid")
	case *m.PID <= 0 || *m.PID > math.MaxInt32:
		return model.Event{}, true, fmt.Errorf("canary message: pid %d out of range", *m.PID)
	}
	ev = model.Event{
		Source:   Source,
		Kind:     KindRead,
		Object:   canaryID(m.Relation, *m.Key),
		Relation: m.Relation,
		Database: m.Database,
		Role:     m.Role,
		PID:      int32(*m.PID),
		Rows:     1,
		Calls:    1,
		Complete: true,
	}
	if m.ClientAddr != nil {
		addr, err := netip.ParseAddr(*m.ClientAddr)
		if err != nil {
			return model.Event{}, true, fmt.Errorf("canary message: client_addr %q is not an IP address", *m.ClientAddr)
		}
		ev.ClientAddr = addr.String()
	}
	if m.Application != nil {
		ev.Application = *m.Application
	}
	if m.QueryID != nil {
		ev.QueryID = *m.QueryID
	}
	return ev, true, nil
}

// DecodeMessage has the shape of wal.Config.Messages. A canary message whose content
// cannot be decoded still becomes a canary read event, with Complete false and what is
// known (the prefix): someone made the canary function, or something posing as it,
// speak, and an unreadable message is never evidence of safety. Other prefixes are
// left to the caller (ok false).
func DecodeMessage(prefix string, content []byte, _ bool) (model.Event, bool) {
	ev, ok, err := Decode(prefix, content)
	if !ok {
		return model.Event{}, false
	}
	if err != nil {
		ev = model.Event{Source: Source, Kind: KindRead, Rows: 1, Calls: 1, Complete: false}
	}
	ev.MessagePrefix = prefix
	return ev, true
}
