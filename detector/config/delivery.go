package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Defaults and limits of alert delivery.
const (
	defaultResendInterval    = time.Minute
	minResendInterval        = time.Second
	defaultResolvedResendFor = 5 * time.Minute
	defaultDeliveryTimeout   = 10 * time.Second
	defaultSpoolMaxEntries   = 10_000
	// maxSecretFileSize bounds what is read from a password, token or secret
	// file: it holds one secret, and a path pointing at a log or an image by
	// mistake must not be read whole.
	maxSecretFileSize = 64 << 10
)

// Alertmanager is the alerts.alertmanager section: delivery of alerts to
// Prometheus Alertmanager's v2 API.
type Alertmanager struct {
	// URLs (alerts.alertmanager.urls) are Alertmanager base URLs: http or
	// https, with a host and an optional path prefix, e.g.
	// "http://am-1:9093" or "https://am.example/prefix". Every URL gets every
	// alert, as Prometheus sends to each member of an HA pair. No user
	// info (use BasicAuth), no query or fragment, no duplicates. Stored as
	// written. Default empty: no Alertmanager delivery.
	URLs []string `yaml:"urls"`
	// ResendInterval (alerts.alertmanager.resend_interval) is how often a
	// firing alert is sent again, so that Alertmanager does not resolve it on
	// its own. Default 1m, minimum 1s.
	ResendInterval time.Duration `yaml:"resend_interval"`
	// ResolvedResendFor (alerts.alertmanager.resolved_resend_for) is how long
	// a resolved alert keeps being sent (every ResendInterval), so that a
	// lost notification does not leave it firing in Alertmanager. Default 5m;
	// 0 sends it once.
	ResolvedResendFor time.Duration `yaml:"resolved_resend_for"`
	// Timeout (alerts.alertmanager.timeout) bounds each request. Default
	// 10s; must be positive.
	Timeout time.Duration `yaml:"timeout"`
	// GeneratorURL (alerts.alertmanager.generator_url) is an optional Go
	// text/template (built-in functions only) whose output is the alert's
	// generatorURL, the link Alertmanager shows next to it. Its data is the
	// alert, with fields Time (a time.Time), State, Rule, Severity, Fingerprint (strings), Labels,
	// Annotations (map[string]string) and Value (a number). Load checks that
	// it parses and that every field it names on the alert exists. Default
	// empty: no generatorURL.
	GeneratorURL string `yaml:"generator_url"`
	// BasicAuth (alerts.alertmanager.basic_auth) authenticates requests with
	// HTTP basic auth. Nil when absent. Excludes BearerToken and
	// BearerTokenFile.
	BasicAuth *BasicAuth `yaml:"basic_auth"`
	// BearerToken (alerts.alertmanager.bearer_token) is sent as
	// "Authorization: Bearer <token>". Not empty when set. Excludes
	// BearerTokenFile and BasicAuth. Never log it; use BearerTokenValue,
	// which also covers BearerTokenFile.
	BearerToken string `yaml:"bearer_token"`
	// BearerTokenFile (alerts.alertmanager.bearer_token_file) is a file
	// holding the bearer token, resolved against the config file's directory;
	// it must be a readable, non-empty regular file at load time. Excludes
	// BearerToken and BasicAuth.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// TLS (alerts.alertmanager.tls) configures https URLs.
	TLS TLS `yaml:"tls"`
}

// BasicAuth is HTTP basic authentication
// (alerts.alertmanager.basic_auth).
type BasicAuth struct {
	// Username (basic_auth.username) is required and not empty.
	Username string `yaml:"username"`
	// Password (basic_auth.password) is the password inline. Exactly one
	// of Password and PasswordFile is set, and not empty. Never log it; use
	// PasswordValue, which also covers PasswordFile.
	Password string `yaml:"password"`
	// PasswordFile (basic_auth.password_file) is a file holding the
	// password, resolved against the config file's directory; it must be a
	// readable, non-empty regular file at load time.
	PasswordFile string `yaml:"password_file"`
}

// TLS is the client TLS settings of an HTTP peer
// (alerts.alertmanager.tls, alerts.webhooks[].tls). The zero value
// verifies the server against the system roots and sends no client
// certificate. The settings apply to https URLs only.
type TLS struct {
	// CAFile (tls.ca_file) is a PEM file of the CA certificates that verify
	// the server, instead of the system roots. Resolved against the config
	// file's directory; must be a readable regular file at load time (its
	// contents are checked by the sender, when it builds its client).
	CAFile string `yaml:"ca_file"`
	// CertFile (tls.cert_file) and KeyFile (tls.key_file) are the PEM client
	// certificate and its key, both or neither. Resolved and checked as
	// CAFile.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName (tls.server_name) is the name the server's certificate is
	// verified against, and sent as SNI, when it differs from the URL's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify (tls.insecure_skip_verify) turns off verification
	// of the server's certificate. Default false; for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Webhook is one entry of alerts.webhooks: an HTTP endpoint that receives
// each alert transition as JSON, signed with a shared secret.
type Webhook struct {
	// Name (alerts.webhooks[].name) identifies the webhook in logs and as the value
	// of a metric label. Characters a-z, A-Z, 0-9, '_', '.', ':' and '-'.
	// Default: the URL's host, with its port if the URL has one and without
	// the brackets of an IPv6 address. Unique among webhooks once defaulted;
	// always set after loading.
	Name string `yaml:"name"`
	// URL (alerts.webhooks[].url) is where alerts are POSTed: http or https, with a
	// host and no user info. Required.
	URL string `yaml:"url"`
	// Secret (alerts.webhooks[].secret) is the shared secret of the
	// X-Pgtripwire-Signature header: "sha256=" and the hex-encoded
	// HMAC-SHA256 of the raw request body keyed with the secret. Exactly one
	// of Secret and SecretFile is set, and not empty. Never log it; use
	// SecretValue, which also covers SecretFile.
	Secret string `yaml:"secret"`
	// SecretFile (alerts.webhooks[].secret_file) is a file holding the secret,
	// resolved against the config file's directory; it must be a readable,
	// non-empty regular file at load time.
	SecretFile string `yaml:"secret_file"`
	// Timeout (alerts.webhooks[].timeout) bounds each request. Default 10s; must be
	// positive.
	Timeout time.Duration `yaml:"timeout"`
	// TLS (alerts.webhooks[].tls) configures an https URL.
	TLS TLS `yaml:"tls"`
}

// setDefaults gives a list entry its defaults before it is decoded, as
// Defaults does for the sections that are not in lists.
func (w *Webhook) setDefaults() { w.Timeout = defaultDeliveryTimeout }

// Spool is the alerts.spool section.
type Spool struct {
	// MaxEntries (alerts.spool.max_entries) is how many undelivered alert
	// transitions are kept in state_dir/spool, so that none is lost while a
	// receiver is down or across a restart. Past it, the oldest is dropped,
	// counted and logged. Default 10000, minimum 1.
	MaxEntries int64 `yaml:"max_entries"`
}

// PasswordValue returns the password: Password, or else the contents of
// PasswordFile, read now (so that a rotated file is picked up) with one
// trailing newline removed. An error names the file, never its contents; an
// empty file is an error. With neither set, it returns "" and no error.
func (b BasicAuth) PasswordValue() (string, error) {
	return inlineOrFile(b.Password, b.PasswordFile, "basic_auth password_file")
}

// BearerTokenValue returns the bearer token: BearerToken, or else the
// contents of BearerTokenFile, read as PasswordValue reads its file. With
// neither set, it returns "" and no error: send no Authorization header.
func (a Alertmanager) BearerTokenValue() (string, error) {
	return inlineOrFile(a.BearerToken, a.BearerTokenFile, "bearer_token_file")
}

// SecretValue returns the webhook's shared secret: Secret, or else the
// contents of SecretFile, read as PasswordValue reads its file. A webhook
// cannot be signed without a secret, so neither being set is an error.
func (w Webhook) SecretValue() (string, error) {
	if w.Secret == "" && w.SecretFile == "" {
		return "", fmt.Errorf("webhook %s: no secret or secret_file", w.Name)
	}
	return inlineOrFile(w.Secret, w.SecretFile, "webhook "+w.Name+" secret_file")
}

func inlineOrFile(inline, file, what string) (string, error) {
	if inline != "" || file == "" {
		return inline, nil
	}
	s, err := readSecretFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return s, nil
}

// errNotRegular and the other errors of readSecretFile and checkReadable
// name the file; none holds any of its contents.
var errNotRegular = errors.New("not a regular file")

// readSecretFile reads a file holding one secret and removes one trailing
// newline (LF or CR LF), as editors and `echo` add one. Only regular files
// are read: a FIFO would block and a device could be endless.
func readSecretFile(path string) (string, error) {
	if err := checkRegular(path); err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFileSize {
		return "", &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d KiB; it should hold one secret", maxSecretFileSize>>10)}
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		s = t
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	if s == "" {
		return "", &os.PathError{Op: "read", Path: path, Err: errors.New("empty")}
	}
	return s, nil
}

// checkReadable checks that path is a regular file this process can open,
// without reading it.
func checkReadable(path string) error {
	if err := checkRegular(path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func checkRegular(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return &os.PathError{Op: "open", Path: path, Err: errNotRegular}
	}
	return nil
}
