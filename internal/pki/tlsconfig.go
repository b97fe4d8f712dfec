package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// CertSource yields the certificate to present now; a Keeper is one, so
// rotation takes effect on the next handshake without restarting anything.
type CertSource interface {
	Certificate() *tls.Certificate
}

// AgentServerTLS is the agent's RPC listener config: TLS 1.3, the agent's
// certificate from src, and a client certificate issued by ca naming the
// control plane is required. Other agents hold certificates from the same
// CA but are refused: only the control plane drives an agent.
func AgentServerTLS(src CertSource, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      ca,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return current(src) },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !IsControlPlane(cs.PeerCertificates[0]) {
				return errors.New("pki: client is not the hearth control plane")
			}
			return nil
		},
	}
}

// ControlPlaneClientTLS is the control plane's config for dialling the
// agent of hostID: it presents src's certificate and accepts only a server
// certificate issued by ca for hostID. The identity is the host ID, not the
// dialled name, so Go's host name check is replaced (InsecureSkipVerify with
// a full chain verification in VerifyConnection, the pattern SPIFFE uses).
func ControlPlaneClientTLS(src CertSource, ca *x509.CertPool, hostID string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return current(src) },
		InsecureSkipVerify:   true, // replaced by VerifyConnection below, which always runs
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeer(ca, cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id != hostID {
				return fmt.Errorf("pki: agent certificate is for host %q, want %q", id, hostID)
			}
			return nil
		},
	}
}

// AgentClientTLS is an agent's config for calling a control plane listener
// that serves a certificate from ca (IssueControlPlane): the server must
// name the control plane; the agent presents src's certificate. For a
// control plane behind a publicly trusted certificate, use the default TLS
// config instead (hostreg signs requests, no client certificate needed).
func AgentClientTLS(src CertSource, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return current(src) },
		InsecureSkipVerify:   true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := verifyPeer(ca, cs, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id != "" {
				return errors.New("pki: server is not the hearth control plane")
			}
			return nil
		},
	}
}

func verifyPeer(ca *x509.CertPool, cs tls.ConnectionState, usage x509.ExtKeyUsage) (string, error) {
	if len(cs.PeerCertificates) == 0 {
		return "", errors.New("pki: peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter, CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return "", fmt.Errorf("pki: verify peer: %w", err)
	}
	if IsControlPlane(leaf) {
		return "", nil
	}
	return HostID(leaf)
}

func current(src CertSource) (*tls.Certificate, error) {
	c := src.Certificate()
	if c == nil {
		return nil, errors.New("pki: no certificate loaded")
	}
	return c, nil
}
