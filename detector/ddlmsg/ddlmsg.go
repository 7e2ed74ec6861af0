// Package ddlmsg decodes the logical decoding messages that pgtripwire's DDL
// event triggers emit (prefix "pgtripwire.ddl", created by `pgtripwire setup`)
// into events with source "ddl": ALTER TABLE … DISABLE ROW LEVEL SECURITY, DROP
// POLICY, CREATE PUBLICATION, GRANT, DDL on a sensitive table, ….
//
// A message is JSON written by the trigger, but whoever may call
// pg_logical_emit_message can write one too: Decode validates every field, bounds
// every string, and reports what is wrong instead of panicking. It is not the
// replication client (package wal receives the messages) and it raises no alert.
package ddlmsg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/pgtripwire/pgtripwire/model"
)

// Prefix is the prefix of the messages this package decodes.
const Prefix = "pgtripwire.ddl"

// Source is the source of DDL events.
const Source = "ddl"

// Kinds the event triggers derive, the values of Event.Kind.
const (
	KindRLSDisabled            = "rls_disabled"
	KindRLSNoForce             = "rls_no_force"
	KindReplicaIdentityChanged = "replica_identity_changed"
	KindTableAltered           = "table_altered"
	KindTableDropped           = "table_dropped"
	KindPolicyCreated          = "policy_created"
	KindPolicyAltered          = "policy_altered"
	KindPolicyDropped          = "policy_dropped"
	KindPublicationChanged     = "publication_changed"
	KindPublicationDropped     = "publication_dropped"
	KindGrant                  = "grant"
	KindFunctionChanged        = "function_changed"
	KindExtensionChanged       = "extension_changed"
	KindTriggerCreated         = "trigger_created"
	KindRuleCreated            = "rule_created"
)

// Kinds is every kind this version knows. A message with another kind is
// still decoded (a newer trigger may know more), its kind kept as written.
var Kinds = []string{
	KindRLSDisabled, KindRLSNoForce, KindReplicaIdentityChanged, KindTableAltered, KindTableDropped,
	KindPolicyCreated, KindPolicyAltered, KindPolicyDropped, KindPublicationChanged, KindPublicationDropped,
	KindGrant, KindFunctionChanged, KindExtensionChanged, KindTriggerCreated, KindRuleCreated,
}

// maxContent bounds a message: the trigger's are a few hundred bytes.
const maxContent = 16 << 10

// maxName bounds a name-like field: an object identity of a function with many
// arguments can be long, but not this long.
const maxName = 2048

// message is the trigger's JSON. Fields are pointers where absence must be
// told from the zero value.
type message struct {
	V           *int   `json:"v"`
	Kind        string `json:"kind"`
	Tag         string `json:"tag"`
	ObjectType  string `json:"object_type"`
	Identity    string `json:"identity"`
	Schema      string `json:"schema"`
	TableSchema string `json:"table_schema"`
	TableName   string `json:"table_name"`
	Sensitive   *bool  `json:"sensitive"`
	SessionUser string `json:"session_user"`
}

var (
	kindRE = regexp.MustCompile(`^[a-z][a-z_]{0,63}$`)
	// tagRE is a command tag: upper-case words ("ALTER TABLE", "CREATE EVENT TRIGGER").
	tagRE = regexp.MustCompile(`^[A-Z]+( [A-Z]+){0,4}$`)
	// objectTypeRE is pg_event_trigger_ddl_commands' object_type ("table",
	// "table column", "policy", "foreign table", …; GRANT reports "TABLE").
	objectTypeRE = regexp.MustCompile(`^[A-Za-z]+( [A-Za-z]+){0,4}$`)
)

// Decode turns a logical decoding message into an event. ok is false, with no
// error, when prefix is not Prefix (the message is someone else's). A message
// with the prefix but not in the trigger's format is an error that says what
// is wrong; it never panics. The event's Time and Database are left to the
// caller, which knows the commit time and the database; Relation is set when
// the DDL was on a table (or its policy, trigger, rule or index), in the
// canonical form of the configuration's sensitive tables (public.users,
// "My Schema"."Users").
func Decode(prefix string, content []byte) (ev model.Event, ok bool, err error) {
	if prefix != Prefix {
		return model.Event{}, false, nil
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("decode %s message: %w", Prefix, err)
		}
	}()
	if len(content) > maxContent {
		return model.Event{}, true, fmt.Errorf("%d bytes, more than the %d a trigger message can have", len(content), maxContent)
	}
	if !utf8.Valid(content) {
		return model.Event{}, true, errors.New("not UTF-8")
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(content))
	if err := dec.Decode(&m); err != nil {
		return model.Event{}, true, fmt.Errorf("not the trigger's JSON object: %w", err)
	}
	if dec.More() {
		return model.Event{}, true, errors.New("data after the JSON object")
	}
	switch {
	case m.V == nil:
		return model.Event{}, true, errors.New(`no format version ("v")`)
	case *m.V != 1:
		return model.Event{}, true, fmt.Errorf("format version %d, this pgtripwire reads version 1 (run pgtripwire setup --apply again)", *m.V)
	case !kindRE.MatchString(m.Kind):
		return model.Event{}, true, fmt.Errorf(`kind %.64q is not a lower-case word`, m.Kind)
	case !tagRE.MatchString(m.Tag):
		return model.Event{}, true, fmt.Errorf(`command tag %.64q is not upper-case words`, m.Tag)
	case m.ObjectType != "" && !objectTypeRE.MatchString(m.ObjectType):
		return model.Event{}, true, fmt.Errorf(`object type %.64q is not words`, m.ObjectType)
	case m.SessionUser == "":
		return model.Event{}, true, errors.New("no session_user")
	case (m.TableSchema == "") != (m.TableName == ""):
		return model.Event{}, true, errors.New("table_schema and table_name come together")
	}
	for _, f := range []struct{ name, v string }{
		{"identity", m.Identity}, {"schema", m.Schema}, {"table_schema", m.TableSchema},
		{"table_name", m.TableName}, {"session_user", m.SessionUser},
	} {
		if len(f.v) > maxName {
			return model.Event{}, true, fmt.Errorf("%s is %d bytes long, more than %d", f.name, len(f.v), maxName)
		}
		if strings.ContainsFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return model.Event{}, true, fmt.Errorf("%s holds control characters", f.name)
		}
	}
	ev = model.Event{
		Source:        Source,
		Kind:          m.Kind,
		Operation:     m.Tag,
		Object:        m.Identity,
		Role:          m.SessionUser,
		MessagePrefix: prefix,
		Complete:      true,
	}
	if m.TableName != "" {
		// Quoted as the configuration and the catalog snapshot quote it, so that Relation
		// compares equal to a configured sensitive table (public."user" included).
		ev.Relation = model.QuoteIdent(m.TableSchema) + "." + model.QuoteIdent(m.TableName)
	}
	return ev, true, nil
}
