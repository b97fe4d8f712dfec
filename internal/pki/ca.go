// Package pki is hearth's small certificate authority for traffic between
// the control plane and host agents.
//
// Identities live in URI SANs: an agent's certificate carries
// hearth://host/<hostID> (plus DNS/IP SANs for its address, for tools that
// check host names), the control plane's carries hearth://control-plane.
// Peers are verified against the CA and by these URIs, never by host name:
// an agent is whoever holds a CA-issued certificate for its host ID, however
// it is dialled.
//
// Every key is ECDSA P-256. The CA key and every agent key are written
// 0600 in a 0700 directory and never leave it: agents send CSRs.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// URIs naming the two kinds of peers.
const (
	hostURIPrefix   = "hearth://host/"
	ControlPlaneURI = "hearth://control-plane"
)

// Lifetimes used when the caller passes zero.
const (
	DefaultCALifetime   = 10 * 365 * 24 * time.Hour
	DefaultCertLifetime = 30 * 24 * time.Hour
)

// clockSkew backdates NotBefore so a peer whose clock runs slightly behind
// accepts a certificate issued a moment ago.
const clockSkew = 5 * time.Minute

// HostURI is the URI SAN naming host id.
func HostURI(hostID string) string { return hostURIPrefix + hostID }

// CA issues and verifies hearth certificates.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	pool    *x509.CertPool
	now     func() time.Time // issuing clock; tests move it
}

// LoadOrCreateCA loads the CA from dir, or creates it there (ca.crt, and
// ca.key with mode 0600; dir is created 0700) on first start. A dir holding
// only one of the two files is an error rather than a silent new CA: agents
// trusting the old one would all break.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return LoadCA(dir)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("pki: %s holds only part of a CA (ca.crt: %v, ca.key: %v)", dir, certErr, keyErr)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "hearth CA", Organization: []string{"hearth"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(DefaultCALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	// Key first: a crash between the writes leaves a key without a
	// certificate, which LoadOrCreateCA reports instead of overwriting.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, pemCert(der), 0o644); err != nil {
		return nil, err
	}
	return LoadCA(dir)
}

// LoadCA loads an existing CA from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	key, err := ReadKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, errors.New("pki: ca.crt is not a CA certificate")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("pki: ca.key does not match ca.crt")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, certPEM: certPEM, key: key, pool: pool, now: time.Now}, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM-encoded (the bundle agents trust).
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// Fingerprint is the CA's pin: "sha256:" and the hex SHA-256 of its DER.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.cert) }

// Fingerprint returns "sha256:<hex>" of cert's DER encoding, the form
// `hearth agent --ca-fingerprint` takes.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// SignCSR issues an agent certificate for hostID from a PEM CSR. The
// identity and SANs come from the arguments, never from the CSR (whose
// requested names are ignored): hosts are the agent's address(es), host or
// host:port, added as IP or DNS SANs. ttl 0 is DefaultCertLifetime. The
// certificate is good for both TLS server (agent RPC) and client (calls to
// the control plane) authentication.
func (ca *CA) SignCSR(csrPEM []byte, hostID string, ttl time.Duration, hosts ...string) ([]byte, error) {
	if hostID == "" || strings.ContainsAny(hostID, "/?#") {
		return nil, fmt.Errorf("pki: invalid host id %q", hostID)
	}
	csr, err := ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(HostURI(hostID))
	if err != nil {
		return nil, fmt.Errorf("pki: host uri: %w", err)
	}
	tmpl := leafTemplate(ca.now(), "hearth host "+hostID, ttl, []*url.URL{u}, hosts)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign host certificate: %w", err)
	}
	return pemCert(der), nil
}

// IssueControlPlane issues the control plane's own certificate and key
// (kept in memory; reissue with a Keeper): URI hearth://control-plane,
// client auth for calls to agents and server auth (with hosts as SANs) for
// a TLS listener agents connect to. ttl 0 is DefaultCertLifetime.
func (ca *CA) IssueControlPlane(ttl time.Duration, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse(ControlPlaneURI)
	tmpl := leafTemplate(ca.now(), "hearth control plane", ttl, []*url.URL{u}, hosts)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign control plane certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), keyPEM, nil
}

func leafTemplate(now time.Time, cn string, ttl time.Duration, uris []*url.URL, hosts []string) *x509.Certificate {
	if ttl <= 0 {
		ttl = DefaultCertLifetime
	}
	t := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"hearth"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         uris,
	}
	for _, h := range hosts {
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			t.IPAddresses = append(t.IPAddresses, ip)
		} else {
			t.DNSNames = append(t.DNSNames, h)
		}
	}
	return t
}

// Verify checks that cert chains to this CA at now for usage and returns
// the host ID it names ("" for the control plane).
func (ca *CA) Verify(cert *x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	return verifyLeaf(ca.pool, cert, now, usage)
}

func verifyLeaf(pool *x509.CertPool, cert *x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (string, error) {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("pki: verify certificate: %w", err)
	}
	if IsControlPlane(cert) {
		return "", nil
	}
	return HostID(cert)
}

// HostID returns the host ID named by cert's hearth://host/ URI SAN.
func HostID(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, hostURIPrefix) && len(s) > len(hostURIPrefix) {
			return s[len(hostURIPrefix):], nil
		}
	}
	return "", errors.New("pki: certificate names no hearth host")
}

// IsControlPlane reports whether cert names the control plane.
func IsControlPlane(cert *x509.Certificate) bool {
	for _, u := range cert.URIs {
		if u.String() == ControlPlaneURI {
			return true
		}
	}
	return false
}

// NeedsRotation reports whether cert has lived two thirds of its lifetime
// at now (or is expired or not yet valid): time to renew, leaving a third of
// the lifetime for retries while the control plane is away.
func NeedsRotation(cert *x509.Certificate, now time.Time) bool {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return now.Before(cert.NotBefore) || !now.Before(cert.NotBefore.Add(life*2/3))
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	return k, nil
}

func randSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand never fails
	return n
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// IssueServer issues a plain TLS server certificate for hosts (DNS names
// or IPs) with a fresh key, kept in memory (the host agent's egress proxy
// presents these to its guests). ttl 0 is DefaultCertLifetime.
func (ca *CA) IssueServer(ttl time.Duration, hosts ...string) (*tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	cn := ""
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	tmpl := leafTemplate(ca.now(), cn, ttl, nil, hosts)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
