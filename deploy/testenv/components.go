package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	apiapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apioptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// component is a server running in a goroutine of this process.
type component struct {
	name     string
	url      string
	cancel   context.CancelFunc
	done     chan error    // receives Run's result once
	finished chan struct{} // closed when Run has returned
}

func runComponent(name string, cancel context.CancelFunc, fn func() error) *component {
	c := &component{name: name, cancel: cancel, done: make(chan error, 1), finished: make(chan struct{})}
	go func() {
		err := fn()
		c.done <- err
		close(c.finished)
	}()
	return c
}

func (c *component) stop(timeout time.Duration) {
	c.cancel()
	select {
	case <-c.finished:
	case <-time.After(timeout):
		logf("%s did not stop within %v", c.name, timeout)
	}
}

// ---- etcd ----

type etcdServer struct {
	clientURL string
	errc      <-chan error
	stop      func()
}

// freePorts returns n distinct free loopback ports. Another process may still
// take one before it is bound; callers retry on EADDRINUSE.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startEtcd(ctx context.Context, dataDir string, verbose bool) (*etcdServer, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

		cfg := embed.NewConfig()
		cfg.Name = "testenv"
		cfg.Dir = dataDir
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ListenMetricsUrls = nil
		// Own zap logger, so the level can be raised before Close: a normal
		// shutdown makes etcd log several "server closed" errors.
		level := zap.NewAtomicLevelAt(zap.ErrorLevel)
		if verbose {
			level.SetLevel(zap.InfoLevel)
		}
		zcfg := zap.NewProductionConfig()
		zcfg.Level = level
		zcfg.OutputPaths = []string{"stderr"}
		zcfg.ErrorOutputPaths = []string{"stderr"}
		lg, err := zcfg.Build()
		if err != nil {
			return nil, err
		}
		cfg.Logger = "zap"
		cfg.LogOutputs = []string{"stderr"}
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
		// Test data only: skipping fsync makes every write much cheaper.
		cfg.UnsafeNoFsync = true

		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			_ = os.RemoveAll(dataDir)
			if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
				continue
			}
			return nil, err
		}
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			e.Close()
			return nil, err
		case <-time.After(60 * time.Second):
			e.Close()
			return nil, fmt.Errorf("etcd not ready after 60s")
		case <-ctx.Done():
			e.Close()
			return nil, context.Cause(ctx)
		}
		stop := func() {
			if !verbose {
				level.SetLevel(zap.FatalLevel)
			}
			done := make(chan struct{})
			go func() { e.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				logf("etcd did not stop within 10s")
			}
		}
		return &etcdServer{clientURL: clientURL.String(), errc: e.Err(), stop: stop}, nil
	}
	return nil, lastErr
}

// ---- kube-apiserver ----

func startAPIServer(o options, dir string, p *pki, etcdURL string) (*component, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	s := apioptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Endpoints may not hold loopback addresses; nothing reaches the
		// kubernetes Service from a pod here anyway.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + dir,
		"--tls-cert-file=" + p.ServingCert,
		"--tls-private-key-file=" + p.ServingKey,
		"--client-ca-file=" + p.CACert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.SAPub,
		"--service-account-signing-key-file=" + p.SAKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
	}
	if o.profile == "minimal" {
		args = append(args, "--enable-priority-and-fairness=false")
	}
	if o.featureGates != "" {
		args = append(args, "--feature-gates="+o.featureGates)
	}
	args = append(args, o.apiserverArgs...)
	if err := fs.Parse(args); err != nil {
		ln.Close()
		return nil, err
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = port

	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		ln.Close()
		return nil, err
	}
	// As kube-apiserver does: loopback clients should not log self-issued warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	ctx, cancel := context.WithCancel(context.Background())
	completed, err := s.Complete(ctx)
	if err != nil {
		cancel()
		ln.Close()
		return nil, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		cancel()
		ln.Close()
		return nil, errors.Join(errs...)
	}
	c := runComponent("kube-apiserver", cancel, func() error { return apiapp.Run(ctx, completed) })
	c.url = fmt.Sprintf("https://127.0.0.1:%d", port)
	return c, nil
}

func adminTLSConfig(p *pki) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		return nil, fmt.Errorf("bad CA PEM")
	}
	cert, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

func waitAPIServerReady(ctx context.Context, api *component, p *pki) error {
	tlsConfig, err := adminTLSConfig(p)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: tlsConfig}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api.url+"/readyz", nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err.Error()
		}
		select {
		case err := <-api.done:
			api.done <- err // keep it for the caller's select
			return fmt.Errorf("kube-apiserver exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last /readyz: %s)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["treffpunkt-testenv"] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: p.caPEM,
	}
	cfg.AuthInfos["treffpunkt-admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: p.adminCertPEM,
		ClientKeyData:         p.adminKeyPEM,
	}
	cfg.Contexts["treffpunkt-testenv"] = &clientcmdapi.Context{
		Cluster:   "treffpunkt-testenv",
		AuthInfo:  "treffpunkt-admin",
		Namespace: "default",
	}
	cfg.CurrentContext = "treffpunkt-testenv"
	return clientcmd.WriteToFile(*cfg, path)
}

// ---- kube-controller-manager ----

func startControllerManager(o options, kubeconfig string, p *pki, controllers string) (*component, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	all, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	nfs := s.Flags(all, disabled, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		// No serving endpoint: readiness is checked through the API instead.
		"--secure-port=0",
		"--controllers=" + controllers,
		"--root-ca-file=" + p.CACert,
		"--service-account-private-key-file=" + p.SAKey,
		"--cluster-signing-cert-file=" + p.CACert,
		"--cluster-signing-key-file=" + p.CAKey,
		"--cluster-name=treffpunkt-testenv",
		"--use-service-account-credentials=false",
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	}
	args = append(args, o.kcmArgs...)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	s.ParsedFlags = &nfs
	ctx, cancel := context.WithCancel(context.Background())
	cfg, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		cancel()
		return nil, err
	}
	completed := cfg.Complete()
	return runComponent("kube-controller-manager", cancel, func() error { return kcmapp.Run(ctx, completed) }), nil
}

// controllerEnabled mirrors kube-controller-manager's --controllers semantics
// closely enough for one name: "*" enables the defaults, "-name" disables.
func controllerEnabled(controllers, name, alias string) bool {
	star := false
	for _, c := range strings.Split(controllers, ",") {
		c = strings.TrimSpace(c)
		switch c {
		case name, alias:
			return true
		case "-" + name, "-" + alias:
			return false
		case "*":
			star = true
		}
	}
	return star
}

// waitControllerManagerReady waits until the serviceaccount controller has
// created the "default" ServiceAccount in namespace "default": then the
// shared informers have synced and the controllers are running. Without that
// controller it only checks that kube-controller-manager has not exited.
func waitControllerManagerReady(ctx context.Context, kcm *component, kubeconfig, controllers string) error {
	if !controllerEnabled(controllers, "serviceaccount-controller", "serviceaccount") {
		select {
		case err := <-kcm.done:
			kcm.done <- err
			return fmt.Errorf("kube-controller-manager exited: %v", err)
		case <-time.After(time.Second):
			return nil
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			logf("checking for the default ServiceAccount: %v", err)
		}
		select {
		case err := <-kcm.done:
			kcm.done <- err
			return fmt.Errorf("kube-controller-manager exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ---- kube-scheduler ----

// startScheduler runs the default scheduler: pods are bound to Nodes by the
// real scheduling rules (resources, node selectors, affinity, host ports).
// No kubelet runs; tests that need a pod to run create Nodes and play the
// kubelet for the pods bound to them.
func startScheduler(kubeconfig string) (*component, error) {
	o := schedoptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range o.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		// No serving endpoint, as for kube-controller-manager.
		"--secure-port=0",
		"--kube-api-qps=200",
		"--kube-api-burst=400",
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	cc, sched, err := schedapp.Setup(ctx, o)
	if err != nil {
		cancel()
		return nil, err
	}
	return runComponent("kube-scheduler", cancel, func() error { return schedapp.Run(ctx, cc, sched) }), nil
}
