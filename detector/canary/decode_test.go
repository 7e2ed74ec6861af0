package canary_test

import (
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/canary"
	"github.com/pgtripwire/pgtripwire/model"
)

const goodMessage = `{"v" : 1, "relation" : "public.users", "key" : "100017", "role" : "mallory", "client_addr" : "10.1.2.3", "application" : "psql", "pid" : 4242, "database" : "app", "query_id" : -5}`

func TestDecode(t *testing.T) {
	ev, ok, err := canary.Decode(canary.MessagePrefix, []byte(goodMessage))
	if err != nil || !ok {
		t.Fatalf("got ok %v, err %v; want a canary event", ok, err)
	}
	want := model.Event{Source: canary.Source, Kind: canary.KindRead, Object: "public.users#100017",
		Relation: "public.users", Database: "app", Role: "mallory", ClientAddr: "10.1.2.3", Application: "psql",
		PID: 4242, QueryID: -5, Rows: 1, Calls: 1, Complete: true}
	if ev.Source != want.Source || ev.Kind != want.Kind || ev.Object != want.Object || ev.Relation != want.Relation ||
		ev.Database != want.Database || ev.Role != want.Role || ev.ClientAddr != want.ClientAddr ||
		ev.Application != want.Application || ev.PID != want.PID || ev.QueryID != want.QueryID || !ev.Complete {
		t.Errorf("got %+v\nwant %+v", ev, want)
	}

	if _, ok, err := canary.Decode("pgtripwire.ddl", []byte(goodMessage)); ok || err != nil {
		t.Errorf("another prefix: got ok %v, err %v; want ok false, no error", ok, err)
	}

	for _, tc := range []struct{ name, content, want string }{
		{"not json", `mallory`, "not a JSON object"},
		{"no version", `{"relation":"r","key":"1","role":"x","pid":1}`, "no version"},
		{"future version", `{"v":2,"relation":"r","key":"1","role":"x","pid":1}`, "version 2"},
		{"no role", `{"v":1,"relation":"r","key":"1","pid":1}`, "no role"},
		{"no pid", `{"v":1,"relation":"r","key":"1","role":"x"}`, "no pid"},
		{"pid out of range", `{"v":1,"relation":"r","key":"1","role":"x","pid":9999999999}`, "out of range"},
		{"bad address", `{"v":1,"relation":"r","key":"1","role":"x","pid":1,"client_addr":"nowhere"}`, "not an IP address"},
		{"trailing data", goodMessage + `{}`, "trailing data"},
		{"wrong type", `{"v":1,"relation":["r"],"key":"1","role":"x","pid":1}`, "not a JSON object"},
		{"too big", `{"v":1,"x":"` + strings.Repeat("a", 70000) + `"}`, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ok, err := canary.Decode(canary.MessagePrefix, []byte(tc.content))
			if !ok || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got ok %v, err %v; want ok and an error containing %q", ok, err, tc.want)
			}
		})
	}
}

// TestDecodeMessageKeepsUnreadableMessages: a canary message that cannot be read
// still pages, marked incomplete.
func TestDecodeMessageKeepsUnreadableMessages(t *testing.T) {
	ev, ok := canary.DecodeMessage(canary.MessagePrefix, []byte("garbage"), false)
	if !ok || ev.Source != canary.Source || ev.Kind != canary.KindRead || ev.Complete {
		t.Errorf("got %+v, %v; want an incomplete canary_read event", ev, ok)
	}
	if _, ok := canary.DecodeMessage("pgtripwire.ddl", []byte(goodMessage), false); ok {
		t.Error("another prefix was taken as a canary message")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(goodMessage))
	f.Add([]byte(`{"v":1,"relation":"r","key":"1","role":"x","pid":1,"client_addr":null}`))
	f.Add([]byte(`{"v":1e400}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, content []byte) {
		ev, ok, err := canary.Decode(canary.MessagePrefix, content)
		if !ok {
			t.Fatal("a canary-prefixed message was not taken")
		}
		if err == nil && (ev.Role == "" || ev.PID <= 0 || ev.Object == "") {
			t.Fatalf("accepted an event without role, pid or canary: %+v", ev)
		}
	})
}
