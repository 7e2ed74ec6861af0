package discover

import (
	"slices"
	"unicode"
)

// Kind is what a column's name says it holds.
type Kind string

// The kinds of credential (and near-credential) columns discover looks for.
const (
	KindNone     Kind = ""
	KindEmail    Kind = "email address"
	KindUsername Kind = "user name"
	KindPassword Kind = "password"
	KindSecret   Kind = "secret or token"
	KindSSN      Kind = "social security number"
	// KindPhone is personal data, not a credential: reported under "also
	// consider", never in the sensitive block.
	KindPhone Kind = "phone number"
)

// namePattern matches the last tokens of a column name (after trailing
// modifiers are dropped), or the whole name when exact is set.
type namePattern struct {
	kind   Kind
	tokens []string
	exact  bool
}

// Matching the *end* of the name is what keeps the decoys out:
// email_verified, email_count, password_updated_at and last_login_ip end in
// words that describe something about the credential, not the credential.
var namePatterns = func() []namePattern {
	var ps []namePattern
	add := func(kind Kind, seqs ...[]string) {
		for _, s := range seqs {
			ps = append(ps, namePattern{kind: kind, tokens: s})
		}
	}
	add(KindEmail,
		[]string{"email"}, []string{"mail"}, []string{"e", "mail"}, []string{"emailaddress"},
		[]string{"emailaddr"}, []string{"email", "address"}, []string{"email", "addr"},
		[]string{"mail", "address"}, []string{"mailaddress"})
	add(KindUsername,
		[]string{"username"}, []string{"user", "name"}, []string{"login"}, []string{"login", "name"},
		[]string{"loginname"}, []string{"screen", "name"}, []string{"screenname"})

	passwords := []string{"password", "passwd", "pwd", "pw", "passphrase"}
	hashes := []string{"hash", "hashed", "digest", "crypt", "crypted", "encrypted", "enc"}
	for _, p := range passwords {
		add(KindPassword, []string{p})
	}
	for _, p := range append(slices.Clone(passwords), "pass") {
		for _, h := range hashes {
			add(KindPassword, []string{p, h}, []string{h, p})
		}
	}
	add(KindPassword, []string{"passwordhash"}, []string{"pwhash"}, []string{"pwdhash"},
		[]string{"passhash"}, []string{"hashedpassword"}, []string{"encryptedpassword"})
	// "hash" alone is a password hash often enough (and in the brief of
	// this tool); content_hash or file_hash are not, so only the whole name.
	ps = append(ps, namePattern{kind: KindPassword, tokens: []string{"hash"}, exact: true})

	add(KindSecret,
		[]string{"token"}, []string{"secret"}, []string{"apikey"}, []string{"api", "key"},
		[]string{"secret", "key"}, []string{"private", "key"}, []string{"access", "key"})
	add(KindSSN, []string{"ssn"}, []string{"social", "security", "number"}, []string{"socialsecuritynumber"})
	add(KindPhone,
		[]string{"phone"}, []string{"phone", "number"}, []string{"phonenumber"}, []string{"mobile"},
		[]string{"mobile", "number"}, []string{"telephone"}, []string{"msisdn"})
	return ps
}()

// trailingModifiers are words after a credential word that name a form of
// the same value: email_canonical, username_lower, email_encrypted still hold
// the credential.
var trailingModifiers = map[string]bool{
	"canonical": true, "lower": true, "lowercase": true, "normalized": true,
	"normalised": true, "clean": true, "encrypted": true, "enc": true,
}

// kindOfName returns what a column name suggests the column holds, or
// KindNone.
func kindOfName(name string) Kind {
	toks := nameTokens(name)
	for _, p := range namePatterns {
		if p.exact && slices.Equal(toks, p.tokens) {
			return p.kind
		}
	}
	trimmed := toks
	for len(trimmed) > 1 && trailingModifiers[trimmed[len(trimmed)-1]] {
		trimmed = trimmed[:len(trimmed)-1]
	}
	for _, cand := range [][]string{toks, trimmed} {
		for _, p := range namePatterns {
			if !p.exact && hasSuffix(cand, p.tokens) {
				return p.kind
			}
		}
	}
	return KindNone
}

func hasSuffix(toks, suffix []string) bool {
	return len(toks) >= len(suffix) && slices.Equal(toks[len(toks)-len(suffix):], suffix)
}

// nameTokens splits a column name into lower-case words: at anything that is
// not a letter (underscores, digits, spaces of quoted names) and at
// camelCase boundaries of quoted names ("passwordHash").
func nameTokens(name string) []string {
	var (
		toks      []string
		cur       []rune
		prevLower bool
	)
	flush := func() {
		if len(cur) > 0 {
			toks = append(toks, string(cur))
			cur = cur[:0]
		}
	}
	for _, r := range name {
		switch {
		case unicode.IsUpper(r):
			if prevLower {
				flush()
			}
			cur = append(cur, unicode.ToLower(r))
			prevLower = false
		case unicode.IsLetter(r):
			cur = append(cur, r)
			prevLower = true
		default:
			flush()
			prevLower = false
		}
	}
	flush()
	return toks
}
