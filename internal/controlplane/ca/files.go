package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/loom-mesh/loom/internal/atomicfile"
	"github.com/loom-mesh/loom/internal/bootstraptoken"
)

// File names: Istio's cacerts layout, used for the plug-in directory and
// for the self-signed root in the data directory.
const (
	caCertFile    = "ca-cert.pem"
	caKeyFile     = "ca-key.pem"
	rootCertFile  = "root-cert.pem"
	certChainFile = "cert-chain.pem"
)

func rootCertPath(dataDir string) string { return filepath.Join(dataDir, rootCertFile) }
func tokenDirPath(dataDir string) string { return bootstraptoken.RegistryDir(dataDir) }

// ensurePrivateDir creates dir with mode 0700 when missing, and refuses an
// existing one that is not a directory or that group or others may access.
// what names the directory in errors ("data directory").
func ensurePrivateDir(dir, what string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
		// MkdirAll's mode is cut by the umask; 0700 needs no more.
		return os.Chmod(dir, 0o700)
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory", what, dir)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s %s has mode %#o: it must not be accessible by group or others (chmod 700 %s)",
			what, dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// loadOrCreateSelfSigned reads dataDir's self-signed root, or creates one
// when neither of its files exists. See New for what is refused.
func loadOrCreateSelfSigned(dataDir string, td spiffeid.TrustDomain, now time.Time, log *slog.Logger) (*signingBundle, error) {
	keyPath, certPath := filepath.Join(dataDir, caKeyFile), filepath.Join(dataDir, caCertFile)
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	certExists, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	const keep = "loomd does not create a new root while the old one's files exist, as that would break every workload's trust; " +
		"restore the file, or move the data directory aside to start a new mesh"
	switch {
	case keyExists && !certExists:
		return nil, fmt.Errorf("%s exists without %s: %s", keyPath, certPath, keep)
	case certExists && !keyExists:
		return nil, fmt.Errorf("%s exists without %s: %s", certPath, keyPath, keep)
	case !keyExists:
		if err := createSelfSigned(keyPath, certPath, td, now); err != nil {
			return nil, err
		}
		log.Info("created a self-signed root CA", "cert", certPath, "trust_domain", td.Name(),
			"expires", now.Add(SelfSignedRootTTL).UTC())
	}
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w; %s", err, keep)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s has mode %#o: it must be readable by its owner only (chmod 600 %s)", keyPath, fi.Mode().Perm(), keyPath)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("%w; %s", err, keep)
	}
	cert, err := readOneCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("%w; %s", err, keep)
	}
	if err := checkSigner(cert, certPath, key, keyPath, now); err != nil {
		return nil, err
	}
	return newBundle(cert, key, nil, []*x509.Certificate{cert}, "self-signed root in "+dataDir)
}

// createSelfSigned writes a new ECDSA P-256 root: the key (0600) and the
// certificate, each through a temporary file renamed into place,
// certificate first.
func createSelfSigned(keyPath, certPath string, td spiffeid.TrustDomain, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{td.Name()}, CommonName: "Loom root CA"},
		// Backdated an hour, for clocks a little behind loomd's.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(SelfSignedRootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create root certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode root key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := atomicfile.Write(certPath, certPEM, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", certPath, err)
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", keyPath, err)
	}
	return nil
}

// loadPlugin reads and checks a plug-in CA directory in Istio's cacerts
// layout.
func loadPlugin(dir string, now time.Time) (*signingBundle, error) {
	p := func(name string) string { return filepath.Join(dir, name) }
	cert, err := readOneCert(p(caCertFile))
	if err != nil {
		return nil, err
	}
	key, err := readKey(p(caKeyFile))
	if err != nil {
		return nil, err
	}
	if err := checkSigner(cert, p(caCertFile), key, p(caKeyFile), now); err != nil {
		return nil, err
	}
	roots, err := readCerts(p(rootCertFile))
	if err != nil {
		return nil, err
	}
	chain, err := readCerts(p(certChainFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%s does not chain to a root of %s through %s: %w", p(caCertFile), p(rootCertFile), p(certChainFile), err)
	}
	// Istio's cert-chain.pem starts with ca-cert.pem; when it does not, the
	// leaf's issuer is put first so that the served chain is complete.
	if !chain[0].Equal(cert) {
		chain = append([]*x509.Certificate{cert}, chain...)
	}
	return newBundle(cert, key, chain, roots, "plug-in CA "+dir)
}

// checkSigner checks that key is cert's, and that cert is a CA certificate
// valid at now.
func checkSigner(cert *x509.Certificate, certPath string, key crypto.Signer, keyPath string, now time.Time) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("%s does not match the certificate in %s", keyPath, certPath)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s: not a CA certificate: it must have basicConstraints CA:TRUE and keyUsage keyCertSign", certPath)
	}
	if now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return fmt.Errorf("%s: valid from %s to %s, not now (%s)", certPath,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// newBundle precomputes a bundle's response tail, root pool and expiry.
func newBundle(cert *x509.Certificate, key crypto.Signer, chain, roots []*x509.Certificate, source string) (*signingBundle, error) {
	b := &signingBundle{cert: cert, key: key, chain: chain, roots: roots, rootPool: x509.NewCertPool(),
		notAfter: cert.NotAfter, source: source}
	for _, c := range chain {
		b.tail = append(b.tail, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
		if c.NotAfter.Before(b.notAfter) {
			b.notAfter = c.NotAfter
		}
	}
	var rootsPEM bytes.Buffer
	for _, r := range roots {
		p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})
		b.tail = append(b.tail, string(p))
		rootsPEM.Write(p)
		b.rootPool.AddCert(r)
	}
	b.rootsPEM = rootsPEM.Bytes()
	return b, nil
}

// publish writes b's trust bundle to DataDir/root-cert.pem (0644: roots
// are public; the directory's 0700 still limits who reaches it).
func (c *CA) publish(b *signingBundle) error {
	path := rootCertPath(c.opts.DataDir)
	if err := atomicfile.Write(path, b.rootsPEM, 0o644); err != nil {
		return fmt.Errorf("publish trust bundle %s: %w", path, err)
	}
	return nil
}

// readCerts reads every CERTIFICATE block of path; none is an error.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	var certs []*x509.Certificate
	for i := 0; ; i++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q: want CERTIFICATE", path, i, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, i, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return certs, nil
}

// readOneCert reads path, which must hold exactly one certificate.
func readOneCert(path string) (*x509.Certificate, error) {
	certs, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: %d certificates: want exactly one", path, len(certs))
	}
	return certs[0], nil
}

// readKey reads a PEM private key (PKCS#1 RSA, SEC 1 EC or PKCS#8). Its
// errors name the file and never hold key material.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM private key", path)
	}
	var key any
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block %q: want RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: private key does not parse: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key of type %T cannot sign", path, key)
	}
	if err := checkPublicKey(signer.Public()); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return signer, nil
}

// checkPublicKey accepts ECDSA P-256 and P-384, RSA of 2048 bits or more,
// and Ed25519.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ECDSA curve %s: must be P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits: must be 2048 or more", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("public key of type %T: must be ECDSA, RSA or Ed25519", pub)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}
