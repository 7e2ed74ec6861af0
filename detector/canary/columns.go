package canary

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"
)

// role is what a column of the canary row holds.
type role int

const (
	roleSkip     role = iota // left to its default (or NULL)
	roleKeyMax               // integer key without a default: max + 1
	roleKeyUUID              // uuid key without a default
	roleEmail                // the canary address
	roleUsername             // a plausible user name
	rolePassword             // a bcrypt hash of a forgotten secret
	roleFirst
	roleLast
	roleFullName
	roleCreated // a real row's creation time, or a time in the past year
	roleTime    // another date/time column with a default or NOT NULL: a real row's value
	roleFiller  // NOT NULL without default: a neutral value of its type (filler)
)

type column struct {
	name     string
	ident    string
	typ      string // format_type
	category string // pg_type.typcategory
	baseType string // pg_type.typname of the (domain's base) type
	role     role
	filler   string // SQL expression, for roleFiller
}

// Column names, matched whole after lower-casing.
var (
	emailNames    = regexp.MustCompile(`^(e_?mail|email_?address|mail|login_email|primary_email)$`)
	usernameNames = regexp.MustCompile(`^(user_?name|login|handle|nick_?name|screen_?name|user_?login)$`)
	passwordNames = regexp.MustCompile(`^(password|password_?hash|passwd|pass_?hash|pw|pwd|pw_?hash|hashed_?password|encrypted_?password|password_?digest|crypted_?password)$`)
	firstNames    = regexp.MustCompile(`^(first_?name|given_?name|forename)$`)
	lastNames     = regexp.MustCompile(`^(last_?name|surname|family_?name)$`)
	fullNames     = regexp.MustCompile(`^(name|full_?name|display_?name|real_?name)$`)
	createdNames  = regexp.MustCompile(`^(created|created_?at|created_?on|signed_?up_?at|registered_?at|inserted_?at|joined_?at)$`)
)

// loadColumns reads the table's columns and decides what the canary rows put in each.
// A NOT NULL column without a default that no rule covers is an error naming it.
func loadColumns(ctx context.Context, tx pgx.Tx, st *tableState) ([]column, error) {
	rows, err := tx.Query(ctx, `
		SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), bt.typcategory::text, bt.typname::text,
			a.attnotnull, a.atthasdef OR a.attidentity <> '', a.attgenerated <> ''
		FROM pg_attribute a
		JOIN pg_type t ON t.oid = a.atttypid
		JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
		WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, st.oid)
	if err != nil {
		return nil, fmt.Errorf("read the columns: %w", err)
	}
	defer rows.Close()
	var cols []column
	var problems []string
	for rows.Next() {
		var c column
		var notNull, hasDefault, generated bool
		if err := rows.Scan(&c.name, &c.typ, &c.category, &c.baseType, &notNull, &hasDefault, &generated); err != nil {
			return nil, fmt.Errorf("read the columns: %w", err)
		}
		c.ident = pgx.Identifier{c.name}.Sanitize()
		if generated {
			continue
		}
		if err := c.decide(st, notNull, hasDefault); err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if c.role != roleSkip {
			cols = append(cols, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the columns: %w", err)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return cols, nil
}

func (c *column) decide(st *tableState, notNull, hasDefault bool) error {
	name := strings.ToLower(c.name)
	text := c.category == "S"
	if c.name == st.keyColumn {
		switch {
		case hasDefault:
			c.role = roleSkip
		case c.baseType == "int2" || c.baseType == "int4" || c.baseType == "int8":
			c.role = roleKeyMax
		case c.baseType == "uuid":
			c.role = roleKeyUUID
		default:
			return fmt.Errorf("primary key column %s (%s) has no default: canaries need one (a sequence, identity, or gen_random_uuid())", c.name, c.typ)
		}
		return nil
	}
	switch {
	case text && emailNames.MatchString(name):
		c.role = roleEmail
	case text && usernameNames.MatchString(name):
		c.role = roleUsername
	case (text || c.baseType == "bytea") && passwordNames.MatchString(name):
		c.role = rolePassword
	case text && firstNames.MatchString(name):
		c.role = roleFirst
	case text && lastNames.MatchString(name):
		c.role = roleLast
	case text && fullNames.MatchString(name):
		c.role = roleFullName
	case c.category == "D" && c.baseType != "interval" && createdNames.MatchString(name):
		c.role = roleCreated
	case c.category == "D" && c.baseType != "interval" && (hasDefault || notNull):
		// updated_at DEFAULT now() would make the canary the most recently active
		// account: it takes a real row's value (spreader.donor) instead. Nullable
		// columns without a default (deleted_at, locked_until) stay NULL: a real
		// row's value could mean anything there.
		c.role = roleTime
		if !hasDefault {
			c.filler, _ = filler(c)
		}
	case hasDefault || !notNull:
		c.role = roleSkip
	default:
		f, ok := filler(c)
		if !ok {
			return fmt.Errorf("column %s (%s) is NOT NULL without a default and canaries have no plausible value for it: give it a default", c.name, c.typ)
		}
		c.role, c.filler = roleFiller, f
	}
	return nil
}

// filler is a neutral value for a NOT NULL column without a default.
func filler(c *column) (string, bool) {
	cast := "::" + c.typ
	switch {
	case c.baseType == "bool":
		return "false", true
	case c.category == "N":
		return "0" + cast, true
	case c.category == "S":
		return "''" + cast, true
	case c.category == "D" && c.baseType != "interval":
		return "now()" + cast, true
	case c.baseType == "interval":
		return "'0'" + cast, true
	case c.baseType == "uuid":
		return "gen_random_uuid()" + cast, true
	case c.baseType == "json" || c.baseType == "jsonb":
		return "'{}'" + cast, true
	case c.category == "A":
		return "'{}'" + cast, true
	case c.category == "E":
		return "(enum_range(NULL" + cast + "))[1]", true
	}
	return "", false
}

// bcryptCost is the work factor of the table's existing bcrypt hashes, so that the
// canaries' hashes look like their neighbours; bcrypt.DefaultCost when none is found.
func bcryptCost(ctx context.Context, tx pgx.Tx, st *tableState, cols []column) (int, error) {
	for _, c := range cols {
		if c.role != rolePassword || c.baseType == "bytea" {
			continue
		}
		var sample string
		err := tx.QueryRow(ctx, `SELECT `+c.ident+`::text FROM `+st.ident+
			` WHERE `+c.ident+`::text LIKE '$2_$%' LIMIT 1`).Scan(&sample)
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("sample a password hash: %w", err)
		}
		if cost, err := bcrypt.Cost([]byte(sample)); err == nil && cost >= bcrypt.MinCost && cost <= 14 {
			return cost, nil
		}
		break
	}
	return bcrypt.DefaultCost, nil
}

// insertCanary inserts one canary row where pl places it and returns its primary key
// as text.
func insertCanary(ctx context.Context, tx pgx.Tx, st *tableState, cols []column, pl placement, order keyOrder, cost int, now time.Time) (string, error) {
	var names, values []string
	var args []any
	param := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	p := pl.p
	if pl.key != "" {
		names = append(names, pgx.Identifier{st.keyColumn}.Sanitize())
		values = append(values, param(pl.key)+"::"+st.keyType)
	}
	for _, c := range cols {
		var v string
		switch c.role {
		case roleKeyMax, roleKeyUUID:
			if pl.key != "" {
				continue
			}
			v = "gen_random_uuid()"
			if c.role == roleKeyMax {
				v = fmt.Sprintf("(SELECT coalesce(max(%s), 0) + 1 FROM %s)", c.ident, st.ident)
			}
		case roleEmail:
			v = param(p.email)
		case roleUsername:
			v = param(p.username)
		case rolePassword:
			h, err := hashSecret(cost)
			if err != nil {
				return "", err
			}
			if c.baseType == "bytea" {
				v = param([]byte(h))
			} else {
				v = param(h)
			}
		case roleFirst:
			v = param(p.first)
		case roleLast:
			v = param(p.last)
		case roleFullName:
			v = param(p.first + " " + p.last)
		case roleCreated, roleTime:
			t, fromRow := pl.donor[c.name]
			switch {
			case fromRow:
				v = param(t) + "::" + c.typ
			case c.role == roleCreated:
				v = param(p.created(now)) + "::timestamptz::" + c.typ
			case c.filler != "":
				v = c.filler
			default:
				continue // its default
			}
		case roleFiller:
			v = c.filler
		default:
			continue
		}
		names = append(names, c.ident)
		values = append(values, v)
	}
	sql := "INSERT INTO " + st.ident + " DEFAULT VALUES"
	if len(names) > 0 {
		overriding := ""
		if pl.key != "" && order.identity {
			overriding = " OVERRIDING SYSTEM VALUE"
		}
		sql = "INSERT INTO " + st.ident + " (" + strings.Join(names, ", ") + ")" + overriding +
			" VALUES (" + strings.Join(values, ", ") + ")"
	}
	sql += " RETURNING " + pgx.Identifier{st.keyColumn}.Sanitize() + "::text"
	var key string
	if err := tx.QueryRow(ctx, sql, args...).Scan(&key); err != nil {
		return "", fmt.Errorf("insert a canary row: %w", err)
	}
	return key, nil
}

// persona is the made-up person behind one canary row.
type persona struct {
	first, last, username, email string
	ageDays                      int
}

func (p persona) created(now time.Time) time.Time {
	return now.Add(-time.Duration(p.ageDays) * 24 * time.Hour).Add(-time.Duration(p.ageDays*977) * time.Second)
}

type personas struct {
	rng  *rand.Rand
	used map[string]bool
}

func newPersonas() *personas {
	return &personas{rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), used: map[string]bool{}}
}

var (
	// Every initial is there, so that an address can sort anywhere in the alphabet.
	givenNames = []string{"anna", "ben", "carla", "daniel", "elena", "felix", "grace", "hugo", "ines",
		"jonas", "karen", "liam", "maria", "nadia", "oscar", "paula", "quentin", "rosa", "samuel",
		"tara", "umar", "vera", "william", "xavier", "yara", "zoe", "marek", "sofia", "tomas", "lucia",
		"noah", "alice", "bruno", "chloe", "emil", "hannah", "ivan", "julia", "omar", "rafael", "sara"}
	familyNames = []string{"andersen", "becker", "costa", "dubois", "evans", "fischer", "garcia",
		"hansen", "ivanova", "jensen", "kowalski", "lambert", "moreau", "novak", "olsen", "petrov",
		"quinn", "rossi", "schmidt", "torres", "ueda", "varga", "weber", "young", "zeller", "silva"}
)

// next makes a persona whose user name has not been used in this call.
func (g *personas) next(domain string) persona { return g.take(g.candidate(domain)) }

// take records p's user name as used and returns p.
func (g *personas) take(p persona) persona {
	g.used[p.username] = true
	return p
}

// candidate makes a persona whose user name has not been used in this call, without
// taking it.
func (g *personas) candidate(domain string) persona {
	for {
		first := givenNames[g.rng.IntN(len(givenNames))]
		last := familyNames[g.rng.IntN(len(familyNames))]
		var user string
		switch g.rng.IntN(4) {
		case 0:
			user = first + "." + last
		case 1:
			user = first[:1] + last + fmt.Sprint(g.rng.IntN(90)+10)
		case 2:
			user = first + "_" + last[:3] + fmt.Sprint(g.rng.IntN(9000)+1000)
		default:
			user = first + last + fmt.Sprint(g.rng.IntN(30)+70)
		}
		if g.used[user] {
			continue
		}
		return persona{
			first:    strings.ToUpper(first[:1]) + first[1:],
			last:     strings.ToUpper(last[:1]) + last[1:],
			username: user,
			email:    user + "@" + domain,
			ageDays:  g.rng.IntN(365) + 30,
		}
	}
}
