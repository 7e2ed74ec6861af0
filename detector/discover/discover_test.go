package discover

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/internal/testkit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// bcryptAlphabet is bcrypt's base64 alphabet.
const bcryptAlphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// fakeBcrypt returns a string in bcrypt's format with the given cost and a
// random salt and digest: discover judges the shape, not the password.
func fakeBcrypt(r *rand.Rand, prefix string, cost int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s%02d$", prefix, cost)
	for range 53 {
		b.WriteByte(bcryptAlphabet[r.IntN(len(bcryptAlphabet))])
	}
	return b.String()
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func insert(t *testing.T, conn *pgx.Conn, sql string, rows [][]any) {
	t.Helper()
	for _, r := range rows {
		if _, err := conn.Exec(t.Context(), sql, r...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// assertNoValue fails if out holds a sampled value or a recognisable piece
// of one: any 8-character window of it.
func assertNoValue(t *testing.T, out string, values []string) {
	t.Helper()
	for _, v := range values {
		for i := 0; i+8 <= len(v); i++ {
			if w := v[i : i+8]; strings.Contains(out, w) {
				t.Fatalf("output holds %q, a piece of the sampled value %q:\n%s", w, v, out)
			}
		}
	}
}

// sensitiveOf loads the printed block as a pgtripwire configuration, proving
// it can be pasted, and returns its sensitive list as table -> columns.
func sensitiveOf(t *testing.T, out string) map[string][]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pgtripwire.yaml")
	body := "database:\n  dsn: postgres://pgtripwire@127.0.0.1:5432/app\n" + out
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) string { return "" })
	if err != nil {
		t.Fatalf("the printed block is not a valid configuration: %v\n%s", err, out)
	}
	got := make(map[string][]string)
	for _, s := range cfg.Sensitive {
		got[s.Table] = s.Columns
	}
	return got
}

func TestRunListsExactlyTheCredentialColumns(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `
		CREATE TABLE public.users (
			id bigint PRIMARY KEY,
			email text NOT NULL,
			username varchar(64) NOT NULL,
			password_hash text NOT NULL,
			email_verified boolean NOT NULL DEFAULT false,
			password_updated_at timestamptz NOT NULL DEFAULT now(),
			email_count int NOT NULL DEFAULT 1,
			created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE public.orders (id bigint PRIMARY KEY, user_id bigint, note text, checksum text, total numeric);
		CREATE TABLE public.empty_table (id int, label text)`)
	conn := connect(t, db.SuperuserDSN())
	r := rand.New(rand.NewPCG(1, 2))
	var users, orders [][]any
	var values []string
	for i := range 20 {
		email := fmt.Sprintf("customer%03d.qz@example.org", i)
		username := fmt.Sprintf("zorro_%03d_qz", i)
		hash := fakeBcrypt(r, "$2b$", 12)
		users = append(users, []any{i, email, username, hash})
		note := fmt.Sprintf("deliver to the back door, parcel %03d", i)
		sum := sha256.Sum256([]byte(note))
		orders = append(orders, []any{i, i, note, hex.EncodeToString(sum[:])})
		values = append(values, email, username, hash, note, hex.EncodeToString(sum[:]))
	}
	insert(t, conn, `INSERT INTO public.users (id, email, username, password_hash) VALUES ($1, $2, $3, $4)`, users)
	insert(t, conn, `INSERT INTO public.orders (id, user_id, note, checksum, total) VALUES ($1, $2, $3, $4, 9.99)`, orders)

	rep, err := Run(t.Context(), conn, Options{SampleRows: DefaultSampleRows})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()

	got := sensitiveOf(t, out)
	want := map[string][]string{"public.users": {"email", "password_hash", "username"}}
	if len(got) != len(want) || !slices.Equal(got["public.users"], want["public.users"]) {
		t.Fatalf("sensitive block: got %v, want %v\n%s", got, want, out)
	}
	for _, evidence := range []string{
		"public.users.email (text): name suggests an email address; 20 sampled values: 20 email addresses",
		"public.users.password_hash (text): name suggests a password; 20 sampled values: 20 bcrypt (cost 12)",
		"public.users.username (character varying(64)): name suggests a user name",
		"public.orders.checksum (text): 20 sampled values: 20 SHA-256 hex digest; the name does not suggest a credential",
	} {
		if !strings.Contains(out, evidence) {
			t.Errorf("output lacks %q:\n%s", evidence, out)
		}
	}
	for _, decoy := range []string{"email_verified", "password_updated_at", "email_count", "note", "empty_table", "WEAK"} {
		if strings.Contains(out, decoy) {
			t.Errorf("output mentions %q:\n%s", decoy, out)
		}
	}
	assertNoValue(t, out, values)
	if strings.Contains(out, "$2b$") || strings.Contains(out, "@example") {
		t.Errorf("output holds a prefix or part of a sampled value:\n%s", out)
	}
}

func TestRunFlagsWeakAndUnknownHashing(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `
		CREATE TABLE public.legacy_accounts (id int, pw text);
		CREATE TABLE public.old_users (id int, password text, login text);
		CREATE TABLE public.plain_users (id int, password varchar(100))`)
	conn := connect(t, db.SuperuserDSN())
	r := rand.New(rand.NewPCG(3, 4))
	var legacy, old, plain [][]any
	var values []string
	for i := range 2000 {
		pw := fmt.Sprintf("Tr0ub4dor&%04dq", i)
		sum := md5.Sum([]byte(pw))
		legacy = append(legacy, []any{i, hex.EncodeToString(sum[:])})
		values = append(values, hex.EncodeToString(sum[:]))
		if i < 10 {
			h := fakeBcrypt(r, "$2a$", 8)
			old = append(old, []any{i, h, fmt.Sprintf("member-%02d-login", i)})
			plain = append(plain, []any{i, pw})
			values = append(values, h, pw)
		}
	}
	insert(t, conn, `INSERT INTO public.legacy_accounts VALUES ($1, $2)`, legacy)
	insert(t, conn, `INSERT INTO public.old_users VALUES ($1, $2, $3)`, old)
	insert(t, conn, `INSERT INTO public.plain_users VALUES ($1, $2)`, plain)
	// With statistics, the big table is sampled with TABLESAMPLE.
	db.Exec(t, `ANALYZE public.legacy_accounts`)

	rep, err := Run(t.Context(), conn, Options{SampleRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()

	got := sensitiveOf(t, out)
	want := map[string][]string{
		"public.legacy_accounts": {"pw"},
		"public.old_users":       {"login", "password"},
		"public.plain_users":     {"password"},
	}
	if len(got) != len(want) {
		t.Fatalf("sensitive block: got %v, want %v\n%s", got, want, out)
	}
	for table, cols := range want {
		if !slices.Equal(got[table], cols) {
			t.Errorf("%s: got columns %v, want %v", table, got[table], cols)
		}
	}
	for _, flag := range []string{
		"public.legacy_accounts.pw: WEAK: a bare fast digest with no salt",
		"public.old_users.password: WEAK: bcrypt cost 8 is below 10",
		"public.plain_users.password: CHECK: 10 of 10 sampled values are in no known password-hash format",
		// TABLESAMPLE may draw a page with fewer than 10 rows: no exact count.
		" MD5 hex digest",
	} {
		if !strings.Contains(out, flag) {
			t.Errorf("output lacks %q:\n%s", flag, out)
		}
	}
	assertNoValue(t, out, values)
}

func TestRunWithoutSelectPrivilegeJudgesByName(t *testing.T) {
	db := pgtest.NewDatabase(t)
	db.Exec(t, `
		CREATE TABLE public.users (id int, email text, password_hash text);
		INSERT INTO public.users VALUES (1, 'someone@example.org', 'x')`)
	db.CreateRole(t, "discover_noselect")
	conn := connect(t, db.DSN("discover_noselect"))

	rep, err := Run(t.Context(), conn, Options{SampleRows: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Tables(); len(got) != 1 || !slices.Equal(got[0].Columns, []string{"email", "password_hash"}) {
		t.Errorf("got tables %v, want public.users with email, password_hash", got)
	}
	wantUnsampled := []Unsampled{{Table: "public.users", Reason: "no SELECT privilege on some of its text columns"}}
	if !slices.Equal(rep.Unsampled, wantUnsampled) {
		t.Errorf("unsampled: got %v, want %v", rep.Unsampled, wantUnsampled)
	}

	// With sampling off, nothing is read and nothing is reported unsampled.
	rep, err = Run(t.Context(), conn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Unsampled) != 0 || len(rep.Tables()) != 1 {
		t.Errorf("names only: got tables %v, unsampled %v; want public.users and none", rep.Tables(), rep.Unsampled)
	}
}

func TestWriteQuotesNamesForConfigAndComments(t *testing.T) {
	rep := Report{
		Database:   "app",
		SampleRows: 10,
		Columns: []Column{
			{Schema: "My Schema", Table: "Users", Name: "Email", Type: "text", NameKind: KindEmail, Listed: true},
			{Schema: "public", Table: "accounts", Name: "user", Type: "text", NameKind: KindNone, Listed: true, Sampled: 1, Emails: 1},
			{Schema: "public", Table: "accounts", Name: "pass\nword", Type: "text", NameKind: KindPassword, Listed: true},
		},
	}
	var buf bytes.Buffer
	if err := rep.Write(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	got := sensitiveOf(t, out)
	want := map[string][]string{
		`"My Schema"."Users"`: {"Email"},
		"public.accounts":     {"pass\nword", "user"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v\n%s", got, want, out)
	}
	for table, cols := range want {
		if !slices.Equal(got[table], cols) {
			t.Errorf("%s: got columns %q, want %q\n%s", table, got[table], cols, out)
		}
	}
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line != "sensitive:" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "  ") {
			t.Errorf("line %d escapes the block or a comment: %q", i+1, line)
		}
	}
}

func TestRunRejectsSampleOutOfRange(t *testing.T) {
	for _, n := range []int{-1, MaxSampleRows + 1} {
		if _, err := Run(t.Context(), nil, Options{SampleRows: n}); err == nil {
			t.Errorf("SampleRows %d: got no error, want one", n)
		}
	}
}
