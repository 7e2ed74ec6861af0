package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// scrapeHash is bcrypt("scrape-s3cret", cost 10), as an operator would write it with
// `htpasswd -nBC 10 prometheus` or Python's bcrypt.
const (
	scrapeUser     = "prometheus"
	scrapePassword = "scrape-s3cret"
	scrapeHash     = "$2a$10$BVqi/r7G5NTTKMwelN1M6ecUma0R7CGqvsyv.e8.DOe3mQfyjvehW"
)

// serveWith starts Serve with a web config file holding body and returns the
// listener's address; the server stops when t ends.
func serveWith(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ValidateConfigFile(path); err != nil {
		t.Fatalf("ValidateConfigFile: %v", err)
	}
	reg := prometheus.NewRegistry()
	promauto.With(reg).NewCounter(prometheus.CounterOpts{Name: "pgtripwire_test_total", Help: "h"}).Inc()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, Handler(reg, func() (bool, map[string]string) { return true, nil }),
			Options{WebConfigFile: path})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve: got %v, want context.Canceled after a clean shutdown", err)
		}
	})
	return ln.Addr().String()
}

func get(t *testing.T, client *http.Client, url, user, password string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBasicAuthProtectsEveryEndpoint(t *testing.T) {
	addr := serveWith(t, "basic_auth_users:\n  "+scrapeUser+": "+scrapeHash+"\n")
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + addr

	for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
		if code, _ := get(t, client, base+path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s without credentials: got %d, want 401", path, code)
		}
		if code, _ := get(t, client, base+path, scrapeUser, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: got %d, want 401", path, code)
		}
		if code, _ := get(t, client, base+path, "someone", scrapePassword); code != http.StatusUnauthorized {
			t.Errorf("%s with an unknown user: got %d, want 401", path, code)
		}
	}
	code, body := get(t, client, base+"/metrics", scrapeUser, scrapePassword)
	if code != http.StatusOK || !strings.Contains(body, "pgtripwire_test_total 1") {
		t.Errorf("/metrics with credentials: got %d %q, want 200 with the registry's metrics", code, body)
	}
}

func TestTLSWithBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certPEM := writeSelfSigned(t, dir)
	addr := serveWith(t, `tls_server_config:
  cert_file: `+filepath.Join(dir, "cert.pem")+`
  key_file: `+filepath.Join(dir, "key.pem")+`
basic_auth_users:
  `+scrapeUser+`: `+scrapeHash+"\n")

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("test certificate not parsed")
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer trusting.CloseIdleConnections()
	base := "https://" + addr

	if code, _ := get(t, trusting, base+"/metrics", "", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics over TLS without credentials: got %d, want 401", code)
	}
	code, body := get(t, trusting, base+"/metrics", scrapeUser, scrapePassword)
	if code != http.StatusOK || !strings.Contains(body, "pgtripwire_test_total 1") {
		t.Errorf("/metrics over TLS with credentials: got %d %q, want 200 with the metrics", code, body)
	}

	// A client that does not trust the certificate is refused by its own TLS stack…
	untrusting := &http.Client{Transport: &http.Transport{}}
	defer untrusting.CloseIdleConnections()
	if resp, err := untrusting.Get(base + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("GET with an unknown CA succeeded, want a certificate error")
	}
	// …and plain HTTP gets no metrics: only Go's "HTTP request to an HTTPS server" 400.
	plain := &http.Client{Transport: &http.Transport{}}
	defer plain.CloseIdleConnections()
	if code, body := get(t, plain, "http://"+addr+"/metrics", scrapeUser, scrapePassword); code != http.StatusBadRequest ||
		strings.Contains(body, "pgtripwire_test_total") {
		t.Errorf("plain HTTP to the TLS port: got %d %q, want 400 without metrics", code, body)
	}
}

func TestValidateConfigFileRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]string{
		"unknown key":       "basic_auth_user:\n  a: b\n",
		"missing cert file": "tls_server_config:\n  cert_file: " + filepath.Join(dir, "nope.pem") + "\n  key_file: " + filepath.Join(dir, "nope.key") + "\n",
		"not yaml":          "basic_auth_users: [\n",
	}
	for name, body := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "web.yml")
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			err := ValidateConfigFile(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s", err, path)
			}
		})
	}
	if err := ValidateConfigFile(filepath.Join(dir, "absent.yml")); err == nil {
		t.Error("a missing file was accepted")
	}
	if err := ValidateConfigFile(""); err != nil {
		t.Errorf("no file (plain HTTP): got %v, want nil", err)
	}
}

// writeSelfSigned writes cert.pem and key.pem for 127.0.0.1 into dir and returns the
// certificate's PEM.
func writeSelfSigned(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgtripwire test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}
