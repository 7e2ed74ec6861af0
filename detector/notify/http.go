package notify

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// httpClient builds the client a sink uses: its own TLS settings, no shared state.
func httpClient(timeout time.Duration, tlsConfig *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsConfig != nil {
		tr.TLSClientConfig = tlsConfig
	}
	return &http.Client{Timeout: timeout, Transport: tr}
}

// permanent reports whether err is the receiver refusing this transition's content
// (400, 413, 422), which no retry changes. Refusals of the request itself (401, 403,
// 404: credentials, secret or URL misconfigured) are retried: they are fixed by
// correcting the configuration, and the spool keeps the pages until then.
func permanent(err error) bool {
	var se *statusError
	if !errors.As(err, &se) {
		return false
	}
	switch se.code {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// statusError is a non-2xx answer.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.code, e.body)
}

// do sends req and turns a non-2xx answer into a statusError. Errors never quote the
// URL, which may carry a token in its path or query.
func do(client *http.Client, req *http.Request) error {
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%s request: %w", req.Method, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	}
	return nil
}
