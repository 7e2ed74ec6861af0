package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// amURL is an Alertmanager section with one URL, to add settings to.
const amURL = minimal + "alerts:\n  alertmanager:\n    urls: [http://am:9093]\n"

// webhook is a minimal webhook section, to add settings to.
const webhook = minimal + "alerts:\n  webhooks:\n    - url: https://hooks.example/a\n      secret: s\n"

func TestParse_DeliveryValues(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		get  func(*Config) any
		want any
	}{
		{"no alertmanager by default", minimal, func(c *Config) any { return c.Alerts.Alertmanager.URLs }, []string(nil)},
		{"basic_auth absent is nil", amURL, func(c *Config) any { return c.Alerts.Alertmanager.BasicAuth }, (*BasicAuth)(nil)},
		{"basic_auth null is nil", amURL + "    basic_auth:\n", func(c *Config) any { return c.Alerts.Alertmanager.BasicAuth }, (*BasicAuth)(nil)},
		{"basic_auth inline", amURL + "    basic_auth: {username: u, password: p}\n",
			func(c *Config) any { return *c.Alerts.Alertmanager.BasicAuth }, BasicAuth{Username: "u", Password: "p"}},
		{"bearer_token inline", amURL + "    bearer_token: t\n", func(c *Config) any { return c.Alerts.Alertmanager.BearerToken }, "t"},
		{"resolved_resend_for 0", amURL + "    resolved_resend_for: 0s\n", func(c *Config) any { return c.Alerts.Alertmanager.ResolvedResendFor }, time.Duration(0)},
		{"resend_interval at minimum", amURL + "    resend_interval: 1s\n", func(c *Config) any { return c.Alerts.Alertmanager.ResendInterval }, time.Second},
		{"URLs kept as written", minimal + "alerts: {alertmanager: {urls: ['HTTPS://AM.example:443/p/', 'http://[::1]:9093']}}\n",
			func(c *Config) any { return c.Alerts.Alertmanager.URLs }, []string{"HTTPS://AM.example:443/p/", "http://[::1]:9093"}},
		{"webhook timeout default", webhook, func(c *Config) any { return c.Alerts.Webhooks[0].Timeout }, 10 * time.Second},
		{"webhook timeout default per entry", webhook + "    - {url: 'https://b.example', secret: s, timeout: 1s}\n    - {url: 'https://c.example', secret: s}\n",
			func(c *Config) any {
				return []time.Duration{c.Alerts.Webhooks[1].Timeout, c.Alerts.Webhooks[2].Timeout}
			},
			[]time.Duration{time.Second, 10 * time.Second}},
		{"webhook name is the host", webhook, func(c *Config) any { return c.Alerts.Webhooks[0].Name }, "hooks.example"},
		{"webhook name has the port", minimal + "alerts: {webhooks: [{url: 'https://hooks.example:8443/x', secret: s}]}\n",
			func(c *Config) any { return c.Alerts.Webhooks[0].Name }, "hooks.example:8443"},
		{"webhook name of an IPv6 host", minimal + "alerts: {webhooks: [{url: 'http://[::1]:80', secret: s}]}\n",
			func(c *Config) any { return c.Alerts.Webhooks[0].Name }, "::1:80"},
		{"webhook name explicit", webhook + "      name: a_b.c:d-1\n", func(c *Config) any { return c.Alerts.Webhooks[0].Name }, "a_b.c:d-1"},
		{"same host, distinct names", webhook + "      name: one\n    - {url: 'https://hooks.example/b', secret: s}\n",
			func(c *Config) any { return []string{c.Alerts.Webhooks[0].Name, c.Alerts.Webhooks[1].Name} }, []string{"one", "hooks.example"}},
		{"spool", minimal + "alerts: {spool: {max_entries: 1}}\n", func(c *Config) any { return c.Alerts.Spool.MaxEntries }, int64(1)},
		{"generator_url with $ inside range", amURL + "    generator_url: '{{range .Labels}}{{.}}{{$.Rule}}{{end}}{{with .Annotations}}{{.summary}}{{end}}'\n",
			func(c *Config) any { return c.Alerts.Alertmanager.GeneratorURL != "" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("pgtripwire.yaml", []byte(tt.yaml), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// Small cases not in testdata/delivery.bad.yaml: the whole error text.
func TestParse_DeliveryErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string
	}{
		{"urls not a list", minimal + "alerts: {alertmanager: {urls: http://am:9093}}",
			`f.yaml:2:31: alerts.alertmanager.urls: want a list, got "http://am:9093"`},
		{"empty URL", minimal + "alerts: {alertmanager: {urls: ['']}}",
			`f.yaml:2:32: alerts.alertmanager.urls[0]: empty; want an http or https URL`},
		{"URL without host", minimal + "alerts: {alertmanager: {urls: ['http:///x']}}",
			`f.yaml:2:32: alerts.alertmanager.urls[0]: cannot use "http:///x": want an http or https URL with a host, e.g. "https://host:port/path"`},
		{"URL with a fragment", minimal + "alerts: {alertmanager: {urls: ['http://am#x']}}",
			`f.yaml:2:32: alerts.alertmanager.urls[0]: cannot use "http://am#x": a base URL has no query or fragment; pgtripwire appends the API path (/api/v2/alerts) to it`},
		{"duplicate URL, other case", minimal + "alerts: {alertmanager: {urls: ['http://am:9093', 'http://AM:9093']}}",
			`f.yaml:2:50: alerts.alertmanager.urls[1]: "http://AM:9093" is already listed in alerts.alertmanager.urls[0] (first at 2:32); list each Alertmanager once`},
		{"user without password", minimal + "alerts: {alertmanager: {urls: ['http://admin@am:9093']}}",
			`f.yaml:2:32: alerts.alertmanager.urls[0]: cannot use "http://admin@am:9093": credentials (user:password@) are not allowed in a URL, which gets logged; use alerts.alertmanager.basic_auth`},
		{"'@' in the path", minimal + "alerts: {webhooks: [{url: 'https://h.example/a@b', secret: s}]}",
			`f.yaml:2:27: alerts.webhooks[0].url: cannot use "https://xxxxx": an '@' after the host must be written %40, since it may be a password's`},
		{"basic_auth empty mapping", amURL + "    basic_auth: {}\n",
			`f.yaml:5:17: alerts.alertmanager.basic_auth: username is missing; add "username: NAME"`},
		{"basic_auth without password", amURL + "    basic_auth: {username: u}\n",
			`f.yaml:5:17: alerts.alertmanager.basic_auth: password is missing; set password, or password_file to read it from a file`},
		{"empty password", amURL + "    basic_auth: {username: u, password: ''}\n",
			`f.yaml:5:41: alerts.alertmanager.basic_auth.password: empty`},
		{"empty bearer_token", amURL + "    bearer_token: ''\n",
			`f.yaml:5:19: alerts.alertmanager.bearer_token: empty`},
		{"empty bearer_token_file", amURL + "    bearer_token_file: ''\n",
			`f.yaml:5:24: alerts.alertmanager.bearer_token_file: empty; remove the key`},
		{"basic_auth not a mapping", amURL + "    basic_auth: u:p\n",
			`f.yaml:5:17: alerts.alertmanager.basic_auth: want a mapping (username, password, password_file), got "u:p"`},
		{"webhook without secret", minimal + "alerts: {webhooks: [{url: 'https://h.example'}]}",
			`f.yaml:2:21: alerts.webhooks[0]: secret is missing; set secret, or secret_file to read it from a file`},
		{"webhook null entry", minimal + "alerts: {webhooks: [~]}",
			`f.yaml:2:21: alerts.webhooks[0]: want a mapping (name, url, secret, secret_file, timeout, tls), got null`},
		{"webhook host not a name", minimal + "alerts: {webhooks: [{url: 'https://b%C3%BCcher.example', secret: s}]}",
			`f.yaml:2:27: alerts.webhooks[0].url: the host "bücher.example" cannot be the webhook's name, which may hold only letters, digits, '_', '.', ':' and '-'; set alerts.webhooks[0].name`},
		{"duplicate explicit names", webhook + "      name: x\n    - {name: x, url: 'https://b.example', secret: s}\n",
			`f.yaml:7:14: alerts.webhooks[1].name: "x" is already the name of alerts.webhooks[0] (at 6:13); give each webhook its own name`},
		{"webhook timeout negative", webhook + "      timeout: -1s\n",
			`f.yaml:6:16: alerts.webhooks[0].timeout: -1s is not positive`},
		{"tls not a mapping", webhook + "      tls: true\n",
			`f.yaml:6:12: alerts.webhooks[0].tls: want a mapping (ca_file, cert_file, key_file, server_name, insecure_skip_verify), got "true"`},
		{"insecure_skip_verify quoted", webhook + "      tls: {insecure_skip_verify: 'yes'}\n",
			`f.yaml:6:35: alerts.webhooks[0].tls.insecure_skip_verify: want true or false, got the quoted string "yes"`},
		{"unknown key in tls", webhook + "      tls: {ca: x}\n",
			`f.yaml:6:13: alerts.webhooks[0].tls: unknown key "ca" (known: ca_file, cert_file, key_file, server_name, insecure_skip_verify)`},
		{"max_entries too large", minimal + "alerts: {spool: {max_entries: 9223372036854775808}}",
			`f.yaml:2:31: alerts.spool.max_entries: want an integer up to 9223372036854775807, got "9223372036854775808"`},
		{"generator_url unknown function", amURL + "    generator_url: '{{ .Rule | lower }}'\n",
			`f.yaml:5:20: alerts.alertmanager.generator_url: not a valid Go template: function "lower" not defined (template line 1)`},
		{"generator_url unknown field, second line", amURL + "    generator_url: \"x\\n{{ if .Labels }}{{ .Severity }}{{ $.Sev }}{{ end }}\"\n",
			`f.yaml:5:20: alerts.alertmanager.generator_url: the alert has no field "Sev" (template line 2, column 36); it has Time, State, Rule, Severity, Labels, Annotations, Fingerprint, Value`},
		{"generator_url unknown field in a range's pipe", amURL + "    generator_url: '{{ range .Label }}{{ end }}'\n",
			`f.yaml:5:20: alerts.alertmanager.generator_url: the alert has no field "Label" (template line 1, column 10); it has Time, State, Rule, Severity, Labels, Annotations, Fingerprint, Value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if got, _, _ := strings.Cut(err.Error(), "\n"); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// No error may show a basic-auth password, a bearer token, a webhook secret
// or the password of a URL, however the file is wrong.
func TestParse_DeliverySecretsNotPrinted(t *testing.T) {
	const secret = "Hunter2Secret"
	for name, body := range map[string]string{
		"secret as a list":            "alerts: {webhooks: [{url: 'https://h.example', secret: [Hunter2Secret]}]}\n",
		"secret as a mapping":         "alerts: {webhooks: [{url: 'https://h.example', secret: {Hunter2Secret: 1}}]}\n",
		"secret as an alias key":      "alerts: {webhooks: [{url: 'https://h.example', secret: {? Hunter2Secret}}]}\n",
		"secret with secret_file":     "alerts: {webhooks: [{url: 'https://h.example', secret: Hunter2Secret, secret_file: nope}]}\n",
		"secret without a space":      "alerts: {webhooks: [{url: 'https://h.example', secret:Hunter2Secret}]}\n",
		"secret run into the url":     "alerts:\n  webhooks:\n    - url: https://h.example\n      secret:Hunter2Secret\n",
		"password without a space":    "alerts:\n  alertmanager:\n    basic_auth:\n      password:Hunter2Secret\n",
		"password as a list":          "alerts: {alertmanager: {basic_auth: {username: u, password: [Hunter2Secret]}}}\n",
		"password with bearer_token":  "alerts: {alertmanager: {basic_auth: {username: u, password: Hunter2Secret}, bearer_token: Hunter2Secret}}\n",
		"bearer_token as a mapping":   "alerts: {alertmanager: {bearer_token: {token: Hunter2Secret}}}\n",
		"bearer_token twice":          "alerts: {alertmanager: {bearer_token: Hunter2Secret, bearer_token: Hunter2Secret}}\n",
		"bearer_token with file":      "alerts: {alertmanager: {bearer_token: Hunter2Secret, bearer_token_file: x}}\n",
		"token without a space":       "alerts:\n  alertmanager:\n    bearer_token:Hunter2Secret\n",
		"URL with password":           "alerts: {alertmanager: {urls: ['http://u:Hunter2Secret@am:9093']}}\n",
		"URL password with a slash":   "alerts: {alertmanager: {urls: ['http://u:Hunter2Secret/x@am:9093']}}\n",
		"URL password with a hash":    "alerts: {alertmanager: {urls: ['http://u:Hunter2Secret#@am:bad']}}\n",
		"URL password badly escaped":  "alerts: {alertmanager: {urls: ['http://u:Hunter2Secret%zz@am']}}\n",
		"webhook URL with password":   "alerts: {webhooks: [{url: 'https://u:Hunter2Secret@h.example', secret: s}]}\n",
		"URL with password as a list": "alerts: {alertmanager: {urls: [[ 'http://u:Hunter2Secret@am' ]]}}\n",
		"URL with password as name":   "alerts: {webhooks: [{name: 'http://u:Hunter2Secret@h', url: 'https://h.example', secret: s}]}\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(minimal+body), nil)
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error shows the secret:\n%v", err)
			}
		})
	}
}

// The acceptance case of the issue: a secret of the wrong type says what was
// wanted and what was found, and nothing of the value.
func TestParse_WrongTypeSecret(t *testing.T) {
	_, err := Parse("f.yaml", []byte(minimal+"alerts: {webhooks: [{url: 'https://h.example', secret: [Hunter2Secret]}]}\n"), nil)
	want := `f.yaml:2:56: alerts.webhooks[0].secret: want a string, got a list`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

// writeFile writes a file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	return path
}

// Files are found relative to the config file, stored resolved, and must be
// readable when the config is loaded.
func TestParse_DeliveryFiles(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "pw", "pw-content\n", 0o600)
	writeFile(t, dir, "token", "tok", 0o600)
	writeFile(t, dir, "ca.pem", "x", 0o600)
	writeFile(t, dir, "empty", "", 0o600)
	writeFile(t, dir, "newline", "\n", 0o600)
	writeFile(t, dir, "big", strings.Repeat("x", maxSecretFileSize+1), 0o600)
	writeFile(t, dir, "unreadable", "x", 0o000)
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "pgtripwire.yaml")

	t.Run("resolved", func(t *testing.T) {
		y := minimal + "alerts:\n  alertmanager:\n    bearer_token_file: token\n    tls: {ca_file: ./ca.pem}\n" +
			"  webhooks: [{url: 'https://h.example', secret_file: pw}]\n"
		cfg, err := Parse(configFile, []byte(y), nil)
		if err != nil {
			t.Fatal(err)
		}
		am := cfg.Alerts.Alertmanager
		got := []string{am.BearerTokenFile, am.TLS.CAFile, cfg.Alerts.Webhooks[0].SecretFile}
		want := []string{filepath.Join(dir, "token"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "pw")}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("paths = %q, want %q", got, want)
		}
		if s, err := cfg.Alerts.Webhooks[0].SecretValue(); err != nil || s != "pw-content" {
			t.Errorf("SecretValue() = %q, %v; want %q", s, err, "pw-content")
		}
	})

	tests := []struct {
		file, want string
	}{
		{"missing", `cannot read "` + filepath.Join(dir, "missing") + `": no such file or directory`},
		{"sub", `cannot read "` + filepath.Join(dir, "sub") + `": not a regular file`},
		{"empty", `cannot read "` + filepath.Join(dir, "empty") + `": empty`},
		{"newline", `cannot read "` + filepath.Join(dir, "newline") + `": empty`},
		{"big", `cannot read "` + filepath.Join(dir, "big") + `": larger than 64 KiB; it should hold one secret`},
		{"/dev/null", `cannot read "/dev/null": not a regular file`},
	}
	if os.Geteuid() != 0 { // root reads anything
		tests = append(tests, struct{ file, want string }{"unreadable", `cannot read "` + filepath.Join(dir, "unreadable") + `": permission denied`})
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			y := minimal + "alerts: {webhooks: [{url: 'https://h.example', secret_file: '" + tt.file + "'}]}\n"
			_, err := Parse(configFile, []byte(y), nil)
			want := configFile + ":2:61: alerts.webhooks[0].secret_file: " + tt.want
			if err == nil || err.Error() != want {
				t.Errorf("error:\n got %v\nwant %s", err, want)
			}
		})
	}

	t.Run("TLS files are only opened", func(t *testing.T) {
		y := minimal + "alerts: {webhooks: [{url: 'https://h.example', secret: s, tls: {cert_file: empty, key_file: missing}}]}\n"
		_, err := Parse(configFile, []byte(y), nil)
		want := configFile + `:2:93: alerts.webhooks[0].tls.key_file: cannot read "` + filepath.Join(dir, "missing") + `": no such file or directory`
		if err == nil || err.Error() != want {
			t.Errorf("error:\n got %v\nwant %s", err, want)
		}
	})
}

func TestSecretValues(t *testing.T) {
	dir := t.TempDir()
	lf := writeFile(t, dir, "lf", "s3cret\n", 0o600)
	crlf := writeFile(t, dir, "crlf", "s3cret\r\n", 0o600)
	two := writeFile(t, dir, "two", "s3cret\n\n", 0o600)
	spaces := writeFile(t, dir, "spaces", " s3cret \n", 0o600)
	empty := writeFile(t, dir, "empty", "\n", 0o600)
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name    string
		get     func() (string, error)
		want    string
		wantErr string // "" for none
	}{
		{"password inline", BasicAuth{Username: "u", Password: "p"}.PasswordValue, "p", ""},
		{"password file", BasicAuth{Username: "u", PasswordFile: lf}.PasswordValue, "s3cret", ""},
		{"password neither", BasicAuth{Username: "u"}.PasswordValue, "", ""},
		{"token inline", Alertmanager{BearerToken: "t"}.BearerTokenValue, "t", ""},
		{"token file CR LF", Alertmanager{BearerTokenFile: crlf}.BearerTokenValue, "s3cret", ""},
		{"token neither", Alertmanager{}.BearerTokenValue, "", ""},
		{"secret inline", Webhook{Name: "w", Secret: "x"}.SecretValue, "x", ""},
		{"secret one newline removed", Webhook{Name: "w", SecretFile: two}.SecretValue, "s3cret\n", ""},
		{"secret spaces kept", Webhook{Name: "w", SecretFile: spaces}.SecretValue, " s3cret ", ""},
		{"secret neither", Webhook{Name: "w"}.SecretValue, "", "webhook w: no secret or secret_file"},
		{"secret file missing", Webhook{Name: "w", SecretFile: missing}.SecretValue, "",
			"read webhook w secret_file: stat " + missing + ": no such file or directory"},
		{"secret file empty", Webhook{Name: "w", SecretFile: empty}.SecretValue, "",
			"read webhook w secret_file: read " + empty + ": empty"},
		{"password file missing", BasicAuth{PasswordFile: missing}.PasswordValue, "",
			"read basic_auth password_file: stat " + missing + ": no such file or directory"},
		{"token file missing", Alertmanager{BearerTokenFile: missing}.BearerTokenValue, "",
			"read bearer_token_file: stat " + missing + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("error = %v, want %s", err, tt.wantErr)
				}
				if err != nil && tt.name != "secret neither" && !errors.Is(err, fs.ErrNotExist) && !strings.HasSuffix(err.Error(), ": empty") {
					t.Errorf("error %v does not unwrap to the file's problem", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	// A file rotated after loading is read anew.
	w := Webhook{Name: "w", SecretFile: lf}
	writeFile(t, dir, "lf", "rotated\n", 0o600)
	if got, err := w.SecretValue(); err != nil || got != "rotated" {
		t.Errorf("after rotation: got %q, %v; want %q", got, err, "rotated")
	}
}
