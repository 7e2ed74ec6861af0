package discover

import (
	"strings"
	"testing"
)

func TestKindOfName(t *testing.T) {
	tests := []struct {
		name string
		want Kind
	}{
		{"email", KindEmail},
		{"e_mail", KindEmail},
		{"mail", KindEmail},
		{"contact_email", KindEmail},
		{"email_address", KindEmail},
		{"email_canonical", KindEmail},
		{"Email", KindEmail},
		{"username", KindUsername},
		{"user_name", KindUsername},
		{"login", KindUsername},
		{"username_canonical", KindUsername},
		{"password", KindPassword},
		{"passwd", KindPassword},
		{"pwd", KindPassword},
		{"pw", KindPassword},
		{"password_hash", KindPassword},
		{"pass_hash", KindPassword},
		{"hashed_password", KindPassword},
		{"encrypted_password", KindPassword},
		{"password_digest", KindPassword},
		{"passwordHash", KindPassword},
		{"hash", KindPassword},
		{"api_key", KindSecret},
		{"apikey", KindSecret},
		{"reset_token", KindSecret},
		{"client_secret", KindSecret},
		{"ssn", KindSSN},
		{"phone_number", KindPhone},
		// Decoys: words about the credential, not the credential.
		{"email_verified", KindNone},
		{"email_count", KindNone},
		{"password_updated_at", KindNone},
		{"last_login_at", KindNone},
		{"last_login_ip", KindNone},
		{"token_expires_at", KindNone},
		{"content_hash", KindNone},
		{"file_hash", KindNone},
		{"id", KindNone},
		{"note", KindNone},
		{"mailbox_size", KindNone},
	}
	for _, tt := range tests {
		if got := kindOfName(tt.name); got != tt.want {
			t.Errorf("kindOfName(%q): got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestRecognizeHash(t *testing.T) {
	salt53 := strings.Repeat("aB3./", 11)[:53]
	tests := []struct {
		value      string
		wantScheme string // "" for no hash
		wantCost   int
		wantWeak   bool
	}{
		{"$2b$12$" + salt53, SchemeBcrypt, 12, false},
		{"$2a$10$" + salt53, SchemeBcrypt, 10, false},
		{"$2y$08$" + salt53, SchemeBcrypt, 8, true},
		{"bcrypt_sha256$$2b$12$" + salt53, SchemeBcrypt, 12, false},
		{"$2b$12$" + salt53[:52], "", 0, false}, // truncated
		{"$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g", SchemeArgon2id, 0, false},
		{"$scrypt$ln=16,r=8,p=1$c2FsdA$aGFzaA", SchemeScrypt, 0, false},
		{"scrypt$c2FsdA$16384$8$1$aGFzaA==", SchemeScrypt, 0, false},
		{"$y$j9T$c2FsdA$aGFzaA", SchemeYescrypt, 0, false},
		{"pbkdf2_sha256$600000$c2FsdA$aGFzaA==", SchemePBKDF2256, 600000, false},
		{"pbkdf2_sha256$260000$c2FsdA$aGFzaA==", SchemePBKDF2256, 260000, true},
		{"$pbkdf2-sha256$29000$c2FsdA$aGFzaA", SchemePBKDF2256, 29000, true},
		{"$pbkdf2$1300000$c2FsdA$aGFzaA", SchemePBKDF2SHA1, 1300000, false},
		{"pbkdf2:sha256:600000$c2FsdA$aGFzaA", SchemePBKDF2256, 600000, false},
		{"$6$rounds=5000$saltsalt$" + strings.Repeat("a", 86), SchemeSHA512, 0, false},
		{"$1$saltsalt$" + strings.Repeat("b", 22), SchemeMD5Crypt, 0, true},
		{"5f4dcc3b5aa765d61d8327deb882cf99", SchemeMD5Hex, 0, true},
		{"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", SchemeSHA1Hex, 0, true},
		{strings.Repeat("ab", 32), SchemeSHA256Hex, 0, true},
		{strings.Repeat("ab", 17), "", 0, false},
		{"hunter2", "", 0, false},
		{"", "", 0, false},
	}
	for _, tt := range tests {
		h, ok := recognizeHash(tt.value)
		if got := map[bool]string{true: h.scheme}[ok]; got != tt.wantScheme || h.cost != tt.wantCost {
			t.Errorf("recognizeHash(%q): got %q cost %d, want %q cost %d", tt.value, got, h.cost, tt.wantScheme, tt.wantCost)
			continue
		}
		if ok {
			if gotWeak := weakness(h.scheme, h.cost) != ""; gotWeak != tt.wantWeak {
				t.Errorf("weakness(%q, %d): got weak %v, want %v", h.scheme, h.cost, gotWeak, tt.wantWeak)
			}
		}
	}
}

func TestObserveBytea(t *testing.T) {
	var s columnStats
	s.observe(make([]byte, 16), true)                          // raw MD5-length digest
	s.observe([]byte("$2b$12$"+strings.Repeat("x", 53)), true) // a text hash stored as bytea
	s.observe([]byte{0xff, 0x00, 0x01}, true)                  // something else
	s.observe(nil, true)                                       // NULL
	if s.nonNull != 3 || s.hashed != 2 || s.digests != 1 {
		t.Fatalf("got nonNull %d hashed %d digests %d, want 3, 2, 1", s.nonNull, s.hashed, s.digests)
	}
	if s.hashes[SchemeMD5Raw] == nil || s.hashes[SchemeBcrypt] == nil {
		t.Fatalf("got schemes %v, want %s and %s", s.hashes, SchemeMD5Raw, SchemeBcrypt)
	}
}

func TestObserveEmail(t *testing.T) {
	var s columnStats
	for _, v := range []string{"a@example.org", "first.last+tag@mail.example.co.uk", "not an email", "@example.org", "a@localhost"} {
		s.observe([]byte(v), false)
	}
	if s.emails != 2 {
		t.Fatalf("got %d emails, want 2", s.emails)
	}
}
