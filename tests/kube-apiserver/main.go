// Command switchyard-test-apiserver runs the real kube-apiserver (the code of
// k8s.io/kubernetes/cmd/kube-apiserver, in process) on top of an embedded etcd,
// for the operator's integration tests. It is not a mock: CRD structural
// schemas, OpenAPI validation, CEL rules, RBAC, admission, watches and the
// status subresource behave as in a cluster. There is no kubelet, scheduler or
// controller-manager, so Pods never run and no namespace gets a "default"
// ServiceAccount on its own.
//
// It listens on 127.0.0.1 on a port chosen by the OS, writes an admin
// kubeconfig and, once /readyz answers ok and the "default" namespace exists,
// prints exactly one line on stdout:
//
//	ready https://127.0.0.1:PORT /path/to/kubeconfig
//
// SIGTERM or SIGINT (or, with --exit-on-stdin-eof, the end of stdin) stops the
// API server and etcd and removes the temporary directory (etcd data, TLS
// material, token file). Everything else it says goes to stderr or --log-file.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sys/unix"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// The context and cluster name in the kubeconfig; the admin user's name too.
const (
	clusterName  = "switchyard-test"
	adminUser    = "switchyard-admin"
	saIssuer     = "https://kubernetes.default.svc.cluster.local"
	serviceRange = "10.0.0.0/24"
	tempPrefix   = "switchyard-test-apiserver-"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// extraUser is a static-token user for least-privilege (RBAC) tests.
type extraUser struct {
	name   string
	groups []string
	token  string
}

var origStderr io.Writer = os.Stderr

func fatalf(format string, args ...any) {
	msg := fmt.Sprintf("switchyard-test-apiserver: "+format+"\n", args...)
	fmt.Fprint(origStderr, msg)
	if origStderr != os.Stderr {
		fmt.Fprint(os.Stderr, msg) // the log file too
	}
}

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("switchyard-test-apiserver", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "where to write the admin kubeconfig (default: inside the temporary directory, removed on exit)")
	var users, apiserverArgs stringList
	fs.Var(&users, "user", "NAME[:GROUP,GROUP...]: one more static-token user with no rights but those RBAC gives it; "+
		"it gets its own user and context named NAME in the kubeconfig (repeatable)")
	fs.Var(&apiserverArgs, "apiserver-arg", "one more kube-apiserver flag, e.g. --apiserver-arg=--feature-gates=Foo=true (repeatable; applied last)")
	logFile := fs.String("log-file", "", "send kube-apiserver and etcd logs (all of stderr) to this file instead of stderr")
	verbosity := fs.Int("v", 0, "kube-apiserver log verbosity (klog -v)")
	stdinEOF := fs.Bool("exit-on-stdin-eof", false, "also stop when stdin reaches end of file (the parent closed it or died)")
	startTimeout := fs.Duration("startup-timeout", 3*time.Minute, "give up if the server is not ready after this long")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fatalf("unexpected arguments: %q", fs.Args())
		return 2
	}
	var extra []extraUser
	for _, u := range users {
		name, groups, _ := strings.Cut(u, ":")
		if name == "" || name == adminUser || name == clusterName || strings.ContainsAny(name, ",\"") {
			fatalf("bad --user %q", u)
			return 2
		}
		eu := extraUser{name: name, token: randomToken()}
		if groups != "" {
			eu.groups = strings.Split(groups, ",")
		}
		extra = append(extra, eu)
	}

	if *logFile != "" {
		// Everything the server, etcd and the Go runtime write to fd 2 goes
		// to the file; our own fatal messages still reach the real stderr.
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fatalf("%v", err)
			return 1
		}
		saved, err := unix.Dup(2)
		if err == nil {
			err = unix.Dup2(int(f.Fd()), 2)
		}
		if err != nil {
			fatalf("redirecting stderr: %v", err)
			return 1
		}
		origStderr = os.NewFile(uintptr(saved), "stderr")
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *stdinEOF {
		ctx2, cancel := context.WithCancel(ctx)
		ctx = ctx2
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}

	removeStaleTempDirs()
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		fatalf("%v", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Lets a later run remove this directory if we are killed with SIGKILL.
	if err := os.WriteFile(filepath.Join(dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		fatalf("%v", err)
		return 1
	}
	if *kubeconfig == "" {
		*kubeconfig = filepath.Join(dir, "kubeconfig")
	}
	if abs, err := filepath.Abs(*kubeconfig); err == nil {
		*kubeconfig = abs
	}

	// etcd: embedded, data in the temp dir, no fsync, ports chosen by the OS.
	etcd, etcdURL, err := startEtcd(filepath.Join(dir, "etcd"))
	if err != nil {
		fatalf("starting etcd: %v", err)
		return 1
	}
	defer func() {
		etcd.Close()
	}()

	// TLS and credentials.
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		fatalf("%v", err)
		return 1
	}
	caPEM, err := writeServingCerts(pki)
	if err != nil {
		fatalf("generating certificates: %v", err)
		return 1
	}
	if err := writeSAKey(filepath.Join(pki, "sa.key")); err != nil {
		fatalf("generating the service account key: %v", err)
		return 1
	}
	adminToken := randomToken()
	var tokens strings.Builder
	fmt.Fprintf(&tokens, "%s,%s,%s,\"system:masters\"\n", adminToken, adminUser, adminUser)
	for _, u := range extra {
		fmt.Fprintf(&tokens, "%s,%s,%s,\"%s\"\n", u.token, u.name, u.name, strings.Join(u.groups, ","))
	}
	tokenFile := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens.String()), 0o600); err != nil {
		fatalf("%v", err)
		return 1
	}

	// The API server listens on a listener we open, so the port is the OS's
	// choice and nothing can take it between choosing and binding.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("listen: %v", err)
		return 1
	}
	port := ln.Addr().(*net.TCPAddr).Port
	serverURL := fmt.Sprintf("https://127.0.0.1:%d", port)

	s := options.NewServerRunOptions()
	flags := flagSet(s)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--tls-cert-file=" + filepath.Join(pki, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "serving.key"),
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + saIssuer,
		"--service-account-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=" + serviceRange,
		// The "kubernetes" Service would get an Endpoints object with
		// 127.0.0.1, which validation refuses; nothing here needs it.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--v=%d", *verbosity),
	}
	args = append(args, apiserverArgs...)
	if err := flags.Parse(args); err != nil {
		fatalf("kube-apiserver flags: %v", err)
		return 2
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = port

	errCh := make(chan error, 1)
	go func() {
		errCh <- runAPIServer(ctx, s)
	}()

	if err := writeKubeconfig(*kubeconfig, serverURL, caPEM, adminToken, extra); err != nil {
		fatalf("writing kubeconfig: %v", err)
		return 1
	}

	if err := waitReady(ctx, *kubeconfig, errCh, *startTimeout); err != nil {
		fatalf("%v", err)
		stop()
		shutdown(errCh)
		return 1
	}
	fmt.Printf("ready %s %s\n", serverURL, *kubeconfig)
	_ = os.Stdout.Sync()

	select {
	case <-ctx.Done():
		fmt.Fprintln(os.Stderr, "switchyard-test-apiserver: stopping")
		stop()
		shutdown(errCh)
		return 0
	case err := <-errCh:
		fatalf("kube-apiserver stopped: %v", err)
		return 1
	}
}

// shutdown waits (bounded) for the API server to return after its context
// was cancelled.
func shutdown(errCh <-chan error) {
	select {
	case err := <-errCh:
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "switchyard-test-apiserver: kube-apiserver shutdown: %v\n", err)
		}
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "switchyard-test-apiserver: kube-apiserver did not stop within 30s")
	}
}

// flagSet holds every kube-apiserver flag, bound to s.
func flagSet(s *options.ServerRunOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	return fs
}

// runAPIServer is what `kube-apiserver` does after parsing its flags
// (cmd/kube-apiserver/app.NewAPIServerCommand), minus the signal handling.
func runAPIServer(ctx context.Context, s *options.ServerRunOptions) error {
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	// kube-apiserver loopback clients should not log self-issued warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return errors.Join(errs...)
	}
	return app.Run(ctx, completed)
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Name = "switchyard-test"
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true // a throw-away single member
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// The JSON gateway would dial the listen address (port 0) forever.
	cfg.EnableGRPCGateway = false
	local := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{local}
	cfg.AdvertiseClientUrls = []url.URL{local}
	cfg.ListenPeerUrls = []url.URL{local}
	cfg.AdvertisePeerUrls = []url.URL{local}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", errors.New("etcd not ready after 60s")
	}
	if len(e.Clients) == 0 {
		e.Close()
		return nil, "", errors.New("etcd has no client listener")
	}
	return e, "http://" + e.Clients[0].Addr().String(), nil
}

func waitReady(ctx context.Context, kubeconfig string, errCh <-chan error, timeout time.Duration) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("reading back the kubeconfig: %w", err)
	}
	cfg.Timeout = 5 * time.Second
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	last := "no answer yet"
	for {
		select {
		case err := <-errCh:
			if err == nil {
				err = errors.New("returned without error")
			}
			return fmt.Errorf("kube-apiserver failed to start: %w", err)
		case <-ctx.Done():
			return errors.New("interrupted before the server was ready")
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %s", timeout, last)
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = fmt.Sprintf("/readyz: %v %s", err, body)
			continue
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			last = fmt.Sprintf("namespace default: %v", err)
			continue
		}
		return nil
	}
}

func writeKubeconfig(path, server string, caPEM []byte, adminToken string, extra []extraUser) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[clusterName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[adminUser] = &clientcmdapi.AuthInfo{Token: adminToken}
	cfg.Contexts[clusterName] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: adminUser, Namespace: "default"}
	for _, u := range extra {
		cfg.AuthInfos[u.name] = &clientcmdapi.AuthInfo{Token: u.token}
		cfg.Contexts[u.name] = &clientcmdapi.Context{Cluster: clusterName, AuthInfo: u.name, Namespace: "default"}
	}
	cfg.CurrentContext = clusterName
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// Written whole and renamed, so a reader never sees half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// writeServingCerts makes a CA and a serving certificate for 127.0.0.1,
// ::1 and localhost, writes serving.crt (leaf then CA) and serving.key, and
// returns the CA certificate for the kubeconfig. A separate CA (rather than a
// self-signed leaf) keeps rustls/webpki happy.
func writeServingCerts(dir string) ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "switchyard-test-apiserver CA"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)
	if err := os.WriteFile(filepath.Join(dir, "serving.crt"), chain, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "serving.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	return caPEM, nil
}

// writeSAKey writes the key that signs and verifies service account tokens
// (TokenRequest, `kubectl create token`).
func writeSAKey(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// removeStaleTempDirs removes the temporary directories of earlier runs that
// were killed before they could clean up (SIGKILL, e.g. a test harness's
// kill-on-drop): those whose pid file names a process that no longer exists.
func removeStaleTempDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "pid"))
		if err != nil {
			continue // not ours, or still being set up
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if processGone(pid) {
			_ = os.RemoveAll(d)
		}
	}
}

// processGone says whether pid no longer exists or is a zombie (killed but
// not yet reaped by its parent).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z'
	}
	return false
}
