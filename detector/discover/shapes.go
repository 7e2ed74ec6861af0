package discover

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Hash schemes discover recognises. The names are printed; nothing of the
// value itself is.
const (
	SchemeBcrypt     = "bcrypt"
	SchemeArgon2id   = "argon2id"
	SchemeArgon2i    = "argon2i"
	SchemeArgon2d    = "argon2d"
	SchemeScrypt     = "scrypt"
	SchemeYescrypt   = "yescrypt"
	SchemeSHA512     = "sha512-crypt"
	SchemeSHA256     = "sha256-crypt"
	SchemeMD5Crypt   = "md5-crypt"
	SchemePBKDF2SHA1 = "pbkdf2-sha1"
	SchemePBKDF2256  = "pbkdf2-sha256"
	SchemePBKDF2512  = "pbkdf2-sha512"
	SchemeMD5Hex     = "MD5 hex digest"
	SchemeSHA1Hex    = "SHA-1 hex digest"
	SchemeSHA256Hex  = "SHA-256 hex digest"
	SchemeSHA512Hex  = "SHA-512 hex digest"
	SchemeMD5Raw     = "MD5-length binary digest"
	SchemeSHA1Raw    = "SHA-1-length binary digest"
	SchemeSHA256Raw  = "SHA-256-length binary digest"
	SchemeSHA512Raw  = "SHA-512-length binary digest"
)

// minBcryptCost is the lowest bcrypt cost not flagged as weak: 10 has been
// the default of most libraries for a decade.
const minBcryptCost = 10

// minPBKDF2Iterations are OWASP's Password Storage Cheat Sheet minimums
// (2023); fewer iterations are flagged.
var minPBKDF2Iterations = map[string]int{
	SchemePBKDF2SHA1: 1_300_000,
	SchemePBKDF2256:  600_000,
	SchemePBKDF2512:  210_000,
}

// maxValueLen bounds what is fetched and examined per value: every shape
// discover knows is shorter.
const maxValueLen = 512

// hashShape is a recognised password-hash format: the scheme and, where the
// format carries one, its work factor (bcrypt cost, PBKDF2 iterations).
type hashShape struct {
	scheme string
	cost   int
	// digest is true for bare digests (hex or binary), which are password
	// hashes only if the column's name says so: a 40-character hex string is
	// as likely a commit id, a 32-character one a random token.
	digest bool
}

var (
	bcryptRE   = regexp.MustCompile(`^\$2[abxy]?\$([0-9]{2})\$[./A-Za-z0-9]{53}$`)
	pbkdf2RE   = regexp.MustCompile(`^(?:pbkdf2_(sha1|sha256|sha512)\$|\$pbkdf2(?:-(sha1|sha256|sha512))?\$|pbkdf2:(sha1|sha256|sha512):)([0-9]{1,10})\$`)
	shaCryptRE = regexp.MustCompile(`^\$([56])\$(?:rounds=[0-9]+\$)?[./A-Za-z0-9]{0,16}\$[./A-Za-z0-9]{43,86}$`)
	md5CryptRE = regexp.MustCompile(`^\$(?:1|apr1)\$[./A-Za-z0-9]{0,8}\$[./A-Za-z0-9]{22}$`)
	hexRE      = regexp.MustCompile(`^[0-9a-fA-F]+$`)
	// emailRE is deliberately loose (RFC 5322 allows far more); it only has
	// to tell a column of addresses from a column of something else.
	emailRE = regexp.MustCompile(`^[^\s@]{1,64}@[^\s@.]+(\.[^\s@.]+)+$`)
)

// recognizeHash tells whether v is in a password-hash format.
func recognizeHash(v string) (hashShape, bool) {
	// Django wraps bcrypt as bcrypt$<hash> and bcrypt_sha256$<hash>.
	inner := v
	for _, p := range []string{"bcrypt_sha256$", "bcrypt$"} {
		inner = strings.TrimPrefix(inner, p)
	}
	if m := bcryptRE.FindStringSubmatch(inner); m != nil {
		cost, _ := strconv.Atoi(m[1])
		return hashShape{scheme: SchemeBcrypt, cost: cost}, true
	}
	switch {
	case strings.HasPrefix(v, "$argon2id$"):
		return hashShape{scheme: SchemeArgon2id}, true
	case strings.HasPrefix(v, "$argon2i$"):
		return hashShape{scheme: SchemeArgon2i}, true
	case strings.HasPrefix(v, "$argon2d$"):
		return hashShape{scheme: SchemeArgon2d}, true
	case strings.HasPrefix(v, "$scrypt$"), strings.HasPrefix(v, "scrypt$"), strings.HasPrefix(v, "$7$"):
		return hashShape{scheme: SchemeScrypt}, true
	case strings.HasPrefix(v, "$y$"), strings.HasPrefix(v, "$gy$"):
		return hashShape{scheme: SchemeYescrypt}, true
	}
	if m := pbkdf2RE.FindStringSubmatch(v); m != nil {
		digest := m[1] + m[2] + m[3] // at most one group matched
		if digest == "" {
			digest = "sha1" // passlib's $pbkdf2$ is PBKDF2-HMAC-SHA1
		}
		iterations, err := strconv.Atoi(m[4])
		if err != nil {
			return hashShape{}, false
		}
		return hashShape{scheme: "pbkdf2-" + digest, cost: iterations}, true
	}
	if m := shaCryptRE.FindStringSubmatch(v); m != nil {
		if m[1] == "6" {
			return hashShape{scheme: SchemeSHA512}, true
		}
		return hashShape{scheme: SchemeSHA256}, true
	}
	if md5CryptRE.MatchString(v) {
		return hashShape{scheme: SchemeMD5Crypt}, true
	}
	if hexRE.MatchString(v) {
		switch len(v) {
		case 32:
			return hashShape{scheme: SchemeMD5Hex, digest: true}, true
		case 40:
			return hashShape{scheme: SchemeSHA1Hex, digest: true}, true
		case 64:
			return hashShape{scheme: SchemeSHA256Hex, digest: true}, true
		case 128:
			return hashShape{scheme: SchemeSHA512Hex, digest: true}, true
		}
	}
	return hashShape{}, false
}

// recognizeRawDigest tells whether binary (non-text) bytes have the length
// of a digest.
func recognizeRawDigest(b []byte) (hashShape, bool) {
	switch len(b) {
	case 16:
		return hashShape{scheme: SchemeMD5Raw, digest: true}, true
	case 20:
		return hashShape{scheme: SchemeSHA1Raw, digest: true}, true
	case 32:
		return hashShape{scheme: SchemeSHA256Raw, digest: true}, true
	case 64:
		return hashShape{scheme: SchemeSHA512Raw, digest: true}, true
	}
	return hashShape{}, false
}

// weakness says why a scheme at a cost is weak, or "" when it is not.
func weakness(scheme string, minCost int) string {
	switch scheme {
	case SchemeBcrypt:
		if minCost < minBcryptCost {
			return fmt.Sprintf("bcrypt cost %d is below %d", minCost, minBcryptCost)
		}
	case SchemeMD5Crypt:
		return "md5-crypt is deprecated by its own author and cracks at GPU speed"
	case SchemeMD5Hex, SchemeSHA1Hex, SchemeSHA256Hex, SchemeSHA512Hex,
		SchemeMD5Raw, SchemeSHA1Raw, SchemeSHA256Raw, SchemeSHA512Raw:
		return "a bare fast digest with no salt in the value: unsalted, it cracks at GPU speed and equal passwords share a hash"
	case SchemePBKDF2SHA1, SchemePBKDF2256, SchemePBKDF2512:
		if want := minPBKDF2Iterations[scheme]; minCost < want {
			return fmt.Sprintf("%d iterations are below OWASP's minimum of %d for %s", minCost, want, scheme)
		}
	}
	return ""
}

// columnStats accumulates what the sampled values of one column look like.
// It keeps counts only, never a value.
type columnStats struct {
	nonNull int
	emails  int
	hashes  map[string]*HashCount
	hashed  int // values in any hash format, digests included
	digests int // of which bare digests
}

// observe examines one sampled value. binary says the column is bytea.
func (s *columnStats) observe(v []byte, binary bool) {
	if v == nil {
		return
	}
	s.nonNull++
	var (
		h  hashShape
		ok bool
	)
	if !binary || isText(v) {
		str := strings.TrimSpace(string(v))
		if len(str) <= 320 && emailRE.MatchString(str) {
			s.emails++
			return
		}
		h, ok = recognizeHash(str)
	} else {
		h, ok = recognizeRawDigest(v)
	}
	if !ok {
		return
	}
	if s.hashes == nil {
		s.hashes = make(map[string]*HashCount)
	}
	hc := s.hashes[h.scheme]
	if hc == nil {
		hc = &HashCount{Scheme: h.scheme, MinCost: h.cost, MaxCost: h.cost}
		s.hashes[h.scheme] = hc
	}
	hc.Count++
	hc.MinCost = min(hc.MinCost, h.cost)
	hc.MaxCost = max(hc.MaxCost, h.cost)
	s.hashed++
	if h.digest {
		s.digests++
	}
}

// isText reports whether b is printable UTF-8, as a text hash stored in a
// bytea column is.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// most reports whether n of total is a majority (at least half, at least
// one): a few odd values (a placeholder, a migrated row) do not hide a shape.
func most(n, total int) bool { return n > 0 && 2*n >= total }
