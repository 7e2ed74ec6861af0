package detector

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgtripwire/pgtripwire/detector/config"
)

func TestTLSClientConfigTrustsTheConfiguredCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := tlsClientConfig(config.TLS{CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("got %v, want the server verified by the configured CA", err)
	}
	resp.Body.Close()
	client.CloseIdleConnections()

	notPEM := filepath.Join(dir, "not.pem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	if _, err := tlsClientConfig(config.TLS{CAFile: notPEM}); err == nil {
		t.Error("got nil for a ca_file without a certificate, want an error")
	}
	if _, err := tlsClientConfig(config.TLS{CertFile: notPEM, KeyFile: notPEM}); err == nil {
		t.Error("got nil for an unusable client certificate, want an error")
	}
	if c, err := tlsClientConfig(config.TLS{}); c != nil || err != nil {
		t.Errorf("got %v, %v for no settings, want nil, nil (Go's defaults)", c, err)
	}
}
