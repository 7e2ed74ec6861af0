package detector

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/notify"
)

// notifyConfig turns the alerts section into the notifier's settings, reading secrets
// and certificates now: a file that went missing since the config was checked is a
// configuration problem found at start, not at the first page.
func notifyConfig(cfg *config.Config) (notify.Config, error) {
	nc := notify.Config{AlertLog: cfg.Alerts.File, StateDir: cfg.StateDir, SpoolMax: int(cfg.Alerts.Spool.MaxEntries),
		ResolveAfter: cfg.Alerts.ResolveAfter}
	if am := cfg.Alerts.Alertmanager; len(am.URLs) > 0 {
		tlsConfig, err := tlsClientConfig(am.TLS)
		if err != nil {
			return nc, fmt.Errorf("alerts.alertmanager.tls: %w", err)
		}
		amc := &notify.AlertmanagerConfig{
			URLs:              am.URLs,
			ResendInterval:    am.ResendInterval,
			ResolvedResendFor: am.ResolvedResendFor,
			Timeout:           am.Timeout,
			GeneratorURL:      am.GeneratorURL,
			TLS:               tlsConfig,
		}
		if am.BasicAuth != nil {
			amc.Username = am.BasicAuth.Username
			if amc.Password, err = am.BasicAuth.PasswordValue(); err != nil {
				return nc, fmt.Errorf("alerts.alertmanager.basic_auth: %w", err)
			}
		}
		if amc.BearerToken, err = am.BearerTokenValue(); err != nil {
			return nc, fmt.Errorf("alerts.alertmanager: %w", err)
		}
		nc.Alertmanager = amc
	}
	for i, w := range cfg.Alerts.Webhooks {
		tlsConfig, err := tlsClientConfig(w.TLS)
		if err != nil {
			return nc, fmt.Errorf("alerts.webhooks[%d].tls: %w", i, err)
		}
		secret, err := w.SecretValue()
		if err != nil {
			return nc, fmt.Errorf("alerts.webhooks[%d]: %w", i, err)
		}
		nc.Webhooks = append(nc.Webhooks, notify.WebhookConfig{
			Name: w.Name, URL: w.URL, Secret: []byte(secret), Timeout: w.Timeout, TLS: tlsConfig,
		})
	}
	return nc, nil
}

// tlsClientConfig builds a client TLS configuration; nil means Go's defaults.
func tlsClientConfig(t config.TLS) (*tls.Config, error) {
	if t == (config.TLS{}) {
		return nil, nil
	}
	c := &tls.Config{
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit, documented opt-in for tests
		MinVersion:         tls.VersionTLS12,
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("ca_file holds no PEM certificate")
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load cert_file and key_file: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}
