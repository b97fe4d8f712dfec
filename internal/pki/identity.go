package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Files of an agent's identity inside its data dir (the agent's side of
// registration; see internal/hostreg).
const (
	AgentKeyFile  = "agent.key" // 0600, generated on the agent, never sent
	AgentCertFile = "agent.crt" // issued by the control plane's CA
	AgentCAFile   = "ca.crt"    // the CA bundle the agent trusts
)

// LoadOrCreateKey returns the agent key in dir, generating it (0600, dir
// 0700) when absent. The key is kept across certificate renewals:
// rotation bounds a certificate's validity; a compromised host is revoked
// by deleting it on the control plane.
func LoadOrCreateKey(dir string) (crypto.Signer, error) {
	path := filepath.Join(dir, AgentKeyFile)
	k, err := ReadKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	b, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// CreateCSR returns a PEM CSR for key. The name is informative only: the
// CA decides the identity (SignCSR).
func CreateCSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	return pemCSR(der), nil
}

// Identity is an agent's loaded certificate, key and trusted CA.
type Identity struct {
	HostID string
	Cert   *tls.Certificate // Leaf set
	CA     *x509.Certificate
	Pool   *x509.CertPool // holds CA only
}

// SaveIdentity checks certPEM (issued for the key in dir, chaining to
// caPEM, naming a host) and stores it with the CA bundle. The CA is written
// first: a crash in between leaves a valid old certificate or none.
func SaveIdentity(dir string, certPEM, caPEM []byte) (*Identity, error) {
	id, err := checkIdentity(dir, certPEM, caPEM, time.Now())
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, AgentCAFile), caPEM, 0o644); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, AgentCertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return id, nil
}

// LoadIdentity loads the identity stored in dir. No identity yet:
// an error matching fs.ErrNotExist. An expired certificate still loads (so
// the caller can tell the operator, or try renewing).
func LoadIdentity(dir string) (*Identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, AgentCertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, AgentCAFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	// Verify at the certificate's own mid-life: loading checks the chain
	// and the pairing, expiry is the caller's concern.
	return checkIdentity(dir, certPEM, caPEM, leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2))
}

func checkIdentity(dir string, certPEM, caPEM []byte, at time.Time) (*Identity, error) {
	key, err := ReadKey(filepath.Join(dir, AgentKeyFile))
	if err != nil {
		return nil, err
	}
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	ca, err := ParseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("pki: certificate is not for this agent's key")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	hostID, err := verifyLeaf(pool, leaf, at, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	if hostID == "" {
		return nil, errors.New("pki: certificate names no hearth host")
	}
	return &Identity{
		HostID: hostID,
		Cert:   &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		CA:     ca,
		Pool:   pool,
	}, nil
}

// KeyPair parses a PEM certificate and key into a tls.Certificate with Leaf.
func KeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: key pair: %w", err)
	}
	return &c, nil // Go ≥1.23 fills Leaf
}
