// Package sitetls serves hearth's public HTTPS: the operator's certificate
// for <domain> and *.<domain> (api.<domain>, <port>-<sandboxID>.<domain>),
// checked at start so a wrong file fails with a message that says what to
// fix, and re-read when its files change (certbot renewals, Kubernetes
// secret updates) without a restart. It is not the fleet's mTLS (internal/pki):
// these certificates come from a public or company CA.
package sitetls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultCheckEvery is how often, at most, the files are looked at again
// (on a handshake: no goroutine, no watcher to leak).
const DefaultCheckEvery = 5 * time.Second

// Options for Load.
type Options struct {
	CertFile, KeyFile string
	// Domain the certificate must cover as *.<Domain> (sandbox and API
	// hosts); <Domain> itself is only warned about (the dashboard is also
	// at app.<Domain>).
	Domain string
	// CheckEvery bounds how often the files are stat'ed; 0: DefaultCheckEvery,
	// negative: on every handshake (tests).
	CheckEvery time.Duration
	Logger     *slog.Logger
	Now        func() time.Time // nil: time.Now
}

// Reloader holds the current certificate and swaps it when the files change.
type Reloader struct {
	o Options

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string // modification times and sizes of both files
	lastCheck time.Time
}

// Load reads and checks the certificate and key. Warnings (the bare domain
// not covered, expiry within 14 days) are logged.
func Load(o Options) (*Reloader, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckEvery == 0 {
		o.CheckEvery = DefaultCheckEvery
	}
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	r := &Reloader{o: o}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, warnings, err := r.read()
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		o.Logger.Warn("tls: " + w)
	}
	r.cert, r.stamp, r.lastCheck = cert, stamp, o.Now()
	return r, nil
}

// ServerConfig is a TLS config presenting the current certificate.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// GetCertificate returns the current certificate, re-reading the files
// first when they changed since the last look. A changed file that does not
// load or check keeps the old certificate (logged): a half-written renewal
// must not take the site down.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.o.Now()
	if r.o.CheckEvery >= 0 && now.Sub(r.lastCheck) < r.o.CheckEvery {
		return r.cert, nil
	}
	r.lastCheck = now
	stamp, err := r.fileStamp()
	if err != nil || stamp == r.stamp {
		if err != nil {
			r.o.Logger.Warn("tls: keeping the current certificate", "err", err)
		}
		return r.cert, nil
	}
	cert, warnings, err := r.read()
	if err != nil {
		r.o.Logger.Warn("tls: changed certificate files do not load; keeping the current certificate", "err", err)
		return r.cert, nil
	}
	for _, w := range warnings {
		r.o.Logger.Warn("tls: " + w)
	}
	r.cert, r.stamp = cert, stamp
	r.o.Logger.Info("tls: certificate reloaded", "cert", r.o.CertFile, "not_after", cert.Leaf.NotAfter)
	return cert, nil
}

// Leaf is the certificate being served now.
func (r *Reloader) Leaf() *x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert.Leaf
}

func (r *Reloader) fileStamp() (string, error) {
	var b strings.Builder
	for _, f := range []struct{ flag, path string }{{"--tls-cert", r.o.CertFile}, {"--tls-key", r.o.KeyFile}} {
		st, err := os.Stat(f.path) // follows symlinks: certbot's live/ links
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", f.flag, f.path, err)
		}
		fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
	}
	return b.String(), nil
}

func (r *Reloader) read() (*tls.Certificate, []string, error) {
	certPEM, err := os.ReadFile(r.o.CertFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read --tls-cert %s: %w", r.o.CertFile, err)
	}
	keyPEM, err := os.ReadFile(r.o.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read --tls-key %s: %w", r.o.KeyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, nil, fmt.Errorf("--tls-key %s is not the key of the certificate in --tls-cert %s: give the key the certificate was issued for", r.o.KeyFile, r.o.CertFile)
		}
		return nil, nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", r.o.CertFile, r.o.KeyFile, err)
	}
	warnings, err := Check(cert.Leaf, r.o.Domain, r.o.Now())
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert %s: %w", r.o.CertFile, err)
	}
	return &cert, warnings, nil
}

// Check reports whether leaf can serve domain: it must cover *.<domain>
// (api.<domain> and every <port>-<id>.<domain>) and be valid now. The bare
// domain not covered, or expiry within 14 days, are warnings. doctor uses
// the same rules on a live server's certificate.
func Check(leaf *x509.Certificate, domain string, now time.Time) (warnings []string, err error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	names := strings.Join(leaf.DNSNames, ", ")
	if names == "" {
		names = "no DNS names"
	}
	// A name no operator would list singly stands for "any sandbox host".
	if leaf.VerifyHostname("49983-"+"hearthprobe."+domain) != nil {
		return nil, fmt.Errorf("certificate does not cover *.%s (sandbox and API hosts); it names %s: issue one for %s and *.%s", domain, names, domain, domain)
	}
	if leaf.VerifyHostname("api."+domain) != nil {
		return nil, fmt.Errorf("certificate does not cover api.%s; it names %s", domain, names)
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("certificate expired on %s: renew it", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("certificate is not valid before %s (is this machine's clock right?)", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if leaf.VerifyHostname(domain) != nil {
		warnings = append(warnings, fmt.Sprintf("certificate does not cover %s itself (it names %s): the dashboard is then reachable at app.%s only", domain, names, domain))
	}
	if left := leaf.NotAfter.Sub(now); left < 14*24*time.Hour {
		warnings = append(warnings, fmt.Sprintf("certificate expires in %s (%s): renew it", left.Round(time.Hour), leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	return warnings, nil
}

// RedirectHandler answers every plain-HTTP request with a permanent redirect
// to the same host and path over HTTPS on httpsPort ("443" leaves it out).
func RedirectHandler(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" {
			http.Error(w, "Host header required", http.StatusBadRequest)
			return
		}
		if strings.Contains(host, ":") { // IPv6 literal
			host = "[" + host + "]"
		}
		if httpsPort != "443" && httpsPort != "" {
			host += ":" + httpsPort
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}
