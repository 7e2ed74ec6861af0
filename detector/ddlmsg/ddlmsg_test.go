package ddlmsg

import (
	"strings"
	"testing"

	"github.com/pgtripwire/pgtripwire/model"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    model.Event
		wantErr string // substring; "" means success
	}{
		{
			name:    "rls disabled",
			content: `{"v": 1, "tag": "ALTER TABLE", "kind": "rls_disabled", "schema": "public", "identity": "public.users", "sensitive": true, "table_name": "users", "object_type": "table", "session_user": "mallory", "table_schema": "public"}`,
			want: model.Event{Source: Source, Kind: "rls_disabled", Operation: "ALTER TABLE", Object: "public.users",
				Relation: "public.users", Role: "mallory", MessagePrefix: Prefix, Complete: true},
		},
		{
			name:    "quoted names keep the configuration's canonical form",
			content: `{"v":1,"tag":"DROP POLICY","kind":"policy_dropped","identity":"p on \"My Schema\".\"Users\"","table_schema":"My Schema","table_name":"Users","session_user":"Bob"}`,
			want: model.Event{Source: Source, Kind: "policy_dropped", Operation: "DROP POLICY", Object: `p on "My Schema"."Users"`,
				Relation: `"My Schema"."Users"`, Role: "Bob", MessagePrefix: Prefix, Complete: true},
		},
		{
			name:    "grant has no object",
			content: `{"v":1,"tag":"GRANT","kind":"grant","object_type":"TABLE","sensitive":false,"session_user":"app"}`,
			want:    model.Event{Source: Source, Kind: "grant", Operation: "GRANT", Role: "app", MessagePrefix: Prefix, Complete: true},
		},
		{
			name:    "unknown fields and kinds of a newer trigger",
			content: `{"v":1,"tag":"CREATE SERVER","kind":"server_created","identity":"s","session_user":"app","new_field":[1]}`,
			want:    model.Event{Source: Source, Kind: "server_created", Operation: "CREATE SERVER", Object: "s", Role: "app", MessagePrefix: Prefix, Complete: true},
		},
		{name: "empty", content: ``, wantErr: "not the trigger's JSON object"},
		{name: "not an object", content: `[1,2]`, wantErr: "not the trigger's JSON object"},
		{name: "truncated", content: `{"v":1,"tag":"GRANT"`, wantErr: "not the trigger's JSON object"},
		{name: "two objects", content: `{"v":1,"tag":"GRANT","kind":"grant","session_user":"a"} {}`, wantErr: "data after the JSON object"},
		{name: "no version", content: `{"tag":"GRANT","kind":"grant","session_user":"a"}`, wantErr: `no format version`},
		{name: "future version", content: `{"v":2,"tag":"GRANT","kind":"grant","session_user":"a"}`, wantErr: "format version 2"},
		{name: "wrong type", content: `{"v":"1","tag":"GRANT","kind":"grant","session_user":"a"}`, wantErr: "not the trigger's JSON object"},
		{name: "no kind", content: `{"v":1,"tag":"GRANT","session_user":"a"}`, wantErr: "kind"},
		{name: "kind with spaces", content: `{"v":1,"tag":"GRANT","kind":"rls disabled","session_user":"a"}`, wantErr: "kind"},
		{name: "tag with a literal", content: `{"v":1,"tag":"SELECT 'x'","kind":"grant","session_user":"a"}`, wantErr: "command tag"},
		{name: "no session user", content: `{"v":1,"tag":"GRANT","kind":"grant"}`, wantErr: "no session_user"},
		{name: "half a table", content: `{"v":1,"tag":"ALTER TABLE","kind":"table_altered","table_name":"users","session_user":"a"}`, wantErr: "come together"},
		{name: "control characters", content: `{"v":1,"tag":"GRANT","kind":"grant","identity":"a\nb","session_user":"a"}`, wantErr: "control characters"},
		{name: "huge identity", content: `{"v":1,"tag":"GRANT","kind":"grant","identity":"` + strings.Repeat("x", 3000) + `","session_user":"a"}`, wantErr: "identity is 3000 bytes"},
		{name: "not utf-8", content: "{\"v\":1,\"tag\":\"GRANT\",\"kind\":\"grant\",\"session_user\":\"\xff\"}", wantErr: "not UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := Decode(Prefix, []byte(tt.content))
			if !ok {
				t.Fatal("got ok=false for the pgtripwire.ddl prefix")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Kind != tt.want.Kind || got.Operation != tt.want.Operation || got.Object != tt.want.Object ||
				got.Relation != tt.want.Relation || got.Role != tt.want.Role || got.Source != tt.want.Source ||
				got.MessagePrefix != tt.want.MessagePrefix || got.Complete != tt.want.Complete {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeIgnoresOtherPrefixes(t *testing.T) {
	for _, prefix := range []string{"pgtripwire.canary", "pgtripwire.ddlx", "other", ""} {
		if _, ok, err := Decode(prefix, []byte("garbage")); ok || err != nil {
			t.Errorf("Decode(%q): got ok=%v err=%v, want not ours and no error", prefix, ok, err)
		}
	}
}

// FuzzDecode: whatever a role allowed to call pg_logical_emit_message writes under
// the prefix, Decode returns an event or an error, never panics, and a decoded
// event has a source, a kind, an operation and a role.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v": 1, "tag": "ALTER TABLE", "kind": "rls_disabled", "identity": "public.users", "table_name": "users", "session_user": "m", "table_schema": "public"}`))
	f.Add([]byte(`{"v":1,"tag":"GRANT","kind":"grant","object_type":"TABLE","session_user":"app"}`))
	f.Add([]byte(`{"v":1e400}`))
	f.Add([]byte(`{"v":1,"tag":"GRANT","kind":"grant","session_user":"a","table_schema":"","table_name":""}`))
	f.Add([]byte(`nul`))
	f.Fuzz(func(t *testing.T, content []byte) {
		ev, ok, err := Decode(Prefix, content)
		if !ok {
			t.Fatal("not ours")
		}
		if err != nil {
			return
		}
		if ev.Source != Source || ev.Kind == "" || ev.Operation == "" || ev.Role == "" {
			t.Fatalf("decoded an incomplete event %+v from %q", ev, content)
		}
	})
}
