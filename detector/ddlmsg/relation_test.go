package ddlmsg_test

// An external test: package config imports the sources, which import ddlmsg.

import (
	"strconv"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/ddlmsg"
	"github.com/pgtripwire/pgtripwire/model"
)

// A DDL event names a table exactly as the configuration names a sensitive table, a
// keyword table ("user") included, so that rules and exceptions compare equal.
func TestRelationQuotedAsTheConfiguration(t *testing.T) {
	for _, name := range []string{"users", "user", "Users", "my table"} {
		ev, _, err := ddlmsg.Decode(ddlmsg.Prefix, []byte(`{"v":1,"kind":"rls_disabled","tag":"ALTER TABLE","session_user":"m","table_schema":"public","table_name":`+strconv.Quote(name)+`}`))
		if err != nil {
			t.Fatal(err)
		}
		st, err := config.NewSensitiveTable(model.QuoteIdent("public")+"."+model.QuoteIdent(name), "email")
		if err != nil {
			t.Fatal(err)
		}
		if ev.Relation != st.Table {
			t.Errorf("table %q: event relation %s, configuration %s", name, ev.Relation, st.Table)
		}
	}
}
