// treffpunkt-testenv runs etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in one process on loopback, for tests that need a real
// Kubernetes API. No kubelet runs: the scheduler binds pods to the Nodes that
// tests create, and the tests play the kubelet for them.
//
// On success it prints one line of JSON to stdout:
//
//	{"kubeconfig":"<dir>/kubeconfig","server":"https://127.0.0.1:<port>","dir":"<dir>"}
//
// and keeps running until SIGTERM/SIGINT or until its stdin is closed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
)

// minimalControllers is what the "minimal" profile runs: enough for namespace
// deletion, garbage collection of owned objects, Deployment -> ReplicaSet
// (-> Pod objects, which kube-scheduler binds to the Nodes tests register;
// no kubelet runs them), StatefulSet/Job -> Pod objects,
// ResourceQuota status, the default ServiceAccount in every namespace, the
// kube-root-ca.crt ConfigMap and the aggregated admin/edit/view ClusterRoles.
var minimalControllers = []string{
	"namespace-controller",
	"garbage-collector-controller",
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"job-controller",
	"resourcequota-controller",
	"serviceaccount-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
}

type options struct {
	dir            string
	verbose        bool
	logLevel       int
	profile        string
	controllers    string
	featureGates   string
	apiserverArgs  []string
	kcmArgs        []string
	watchStdin     bool
	startupTimeout time.Duration
	crdDir         string
}

func main() {
	start := time.Now()
	var o options
	fs := pflag.NewFlagSet("treffpunkt-testenv", pflag.ContinueOnError)
	fs.StringVar(&o.dir, "dir", "", "working directory for certificates, kubeconfig and etcd data; kept on exit (default: a new temporary directory, removed on exit)")
	fs.BoolVar(&o.verbose, "verbose", false, "log informational messages of etcd, kube-apiserver, kube-controller-manager and kube-scheduler to stderr (default: errors only)")
	fs.IntVarP(&o.logLevel, "v", "v", 2, "klog verbosity when --verbose is set")
	fs.StringVar(&o.profile, "profile", "minimal", "minimal: only the controllers tests need, API priority and fairness off; full: all default kube-controller-manager controllers, APF on")
	fs.StringVar(&o.controllers, "controllers", "", "override kube-controller-manager --controllers (comma-separated, as for kube-controller-manager)")
	fs.StringVar(&o.featureGates, "feature-gates", "", "Kubernetes feature gates, e.g. Foo=true,Bar=false (shared by kube-apiserver and kube-controller-manager)")
	fs.StringArrayVar(&o.apiserverArgs, "apiserver-arg", nil, "extra kube-apiserver flag, e.g. --apiserver-arg=--audit-log-path=/tmp/a.log (repeatable; applied last)")
	fs.StringArrayVar(&o.kcmArgs, "kcm-arg", nil, "extra kube-controller-manager flag (repeatable; applied last)")
	fs.BoolVar(&o.watchStdin, "watch-stdin", true, "exit when stdin reaches EOF (ignored when stdin is /dev/null or closed)")
	fs.DurationVar(&o.startupTimeout, "startup-timeout", 120*time.Second, "give up if not ready within this time")
	fs.StringVar(&o.crdDir, "crds", "", "a directory of CustomResourceDefinitions to install before kube-controller-manager starts")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if o.profile != "minimal" && o.profile != "full" {
		fmt.Fprintf(os.Stderr, "treffpunkt-testenv: --profile must be minimal or full\n")
		os.Exit(2)
	}
	setupLogging(o.verbose, o.logLevel)
	os.Exit(run(o, start))
}

func setupLogging(verbose bool, level int) {
	kfs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(kfs)
	if verbose {
		_ = kfs.Set("v", fmt.Sprint(level))
		_ = kfs.Set("logtostderr", "true")
		return
	}
	// Quiet: informational and warning lines are dropped, errors go to stderr.
	// (At v=0 kube-apiserver alone logs ~40 warnings on every start.)
	_ = kfs.Set("v", "0")
	_ = kfs.Set("logtostderr", "false")
	_ = kfs.Set("stderrthreshold", "FATAL")
	klog.SetOutput(io.Discard)
	// Error lines reach stderr through this writer, minus known start-up noise.
	klog.SetOutputBySeverity("ERROR", noiseFilter{os.Stderr})
}

// benignErrors are logged at error level but mean nothing here: on every
// start (no kube-system namespace for the first milliseconds; the "none"
// endpoint reconciler always reports stale endpoints), and whenever a
// controller loses an optimistic-concurrency race, which it retries.
var benignErrors = []string{
	"Found stale data, removed previous endpoints on kubernetes service",
	`namespaces \"kube-system\" not found`,
	"the object has been modified; please apply your changes to the latest version and try again",
}

type noiseFilter struct{ w io.Writer }

func (f noiseFilter) Write(p []byte) (int, error) {
	for _, b := range benignErrors {
		if bytes.Contains(p, []byte(b)) {
			return len(p), nil
		}
	}
	return f.w.Write(p)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "treffpunkt-testenv: "+format+"\n", args...)
}

// cleanup runs at most once: on a normal exit, and also if a component calls
// klog.FlushAndExit, so that a temporary directory is not left behind.
var (
	cleanupOnce sync.Once
	cleanupFns  []func()
	cleanupMu   sync.Mutex
)

func addCleanup(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanupFns = append(cleanupFns, f)
}

func runCleanup() {
	cleanupOnce.Do(func() {
		cleanupMu.Lock()
		defer cleanupMu.Unlock()
		for i := len(cleanupFns) - 1; i >= 0; i-- {
			cleanupFns[i]()
		}
	})
}

func run(o options, start time.Time) int {
	osExit := klog.OsExit
	klog.OsExit = func(code int) { runCleanup(); osExit(code) }
	defer runCleanup()

	// Shutdown triggers: SIGINT/SIGTERM, EOF on stdin.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	if o.watchStdin {
		watchStdin(func() { cancelCause(fmt.Errorf("stdin closed")) })
	}

	dir, err := prepareDir(o.dir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	if o.dir == "" {
		addCleanup(func() { _ = os.RemoveAll(dir) })
	}

	p, err := generatePKI(dir)
	if err != nil {
		logf("generating certificates: %v", err)
		return 1
	}

	etcd, err := startEtcd(ctx, filepath.Join(dir, "etcd"), o.verbose)
	if err != nil {
		logf("starting etcd: %v", err)
		return 1
	}
	addCleanup(etcd.stop)
	if o.verbose {
		logf("etcd ready at %s after %v", etcd.clientURL, time.Since(start).Round(time.Millisecond))
	}

	// Components get their own contexts so they can be stopped in order:
	// kube-controller-manager, then kube-apiserver, then etcd.
	api, err := startAPIServer(o, dir, p, etcd.clientURL)
	if err != nil {
		logf("starting kube-apiserver: %v", err)
		return 1
	}
	var scheduler *component
	shutdown := func(code int, kcm *component) int {
		if o.verbose || code != 0 {
			logf("shutting down")
		}
		t := time.Now()
		if scheduler != nil {
			scheduler.stop(10 * time.Second)
		}
		if kcm != nil {
			kcm.stop(10 * time.Second)
		}
		tKCM := time.Since(t)
		api.stop(20 * time.Second)
		if o.verbose {
			logf("stopped kube-scheduler and kube-controller-manager in %v, kube-apiserver in %v",
				tKCM.Round(time.Millisecond), (time.Since(t) - tKCM).Round(time.Millisecond))
		}
		return code
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, api.url, p); err != nil {
		logf("writing kubeconfig: %v", err)
		return shutdown(1, nil)
	}

	readyCtx, readyCancel := context.WithTimeout(ctx, o.startupTimeout)
	defer readyCancel()

	if err := waitAPIServerReady(readyCtx, api, p); err != nil {
		logf("kube-apiserver did not become ready: %v", errOrCause(err, ctx))
		return shutdown(1, nil)
	}
	if o.verbose {
		logf("kube-apiserver ready at %s after %v", api.url, time.Since(start).Round(time.Millisecond))
	}

	if o.crdDir != "" {
		if err := installCRDs(readyCtx, o.crdDir, kubeconfig); err != nil {
			logf("installing CRDs: %v", err)
			return shutdown(1, nil)
		}
	}

	controllers := o.controllers
	if controllers == "" {
		if o.profile == "full" {
			controllers = "*"
		} else {
			controllers = strings.Join(minimalControllers, ",")
		}
	}
	kcm, err := startControllerManager(o, kubeconfig, p, controllers)
	if err != nil {
		logf("starting kube-controller-manager: %v", err)
		return shutdown(1, nil)
	}
	if err := waitControllerManagerReady(readyCtx, kcm, kubeconfig, controllers); err != nil {
		logf("kube-controller-manager did not become ready: %v", errOrCause(err, ctx))
		return shutdown(1, kcm)
	}
	scheduler, err = startScheduler(kubeconfig)
	if err != nil {
		logf("starting kube-scheduler: %v", err)
		return shutdown(1, kcm)
	}

	line, _ := json.Marshal(struct {
		Kubeconfig string `json:"kubeconfig"`
		Server     string `json:"server"`
		Dir        string `json:"dir"`
	}{kubeconfig, api.url, dir})
	if _, err := fmt.Fprintln(os.Stdout, string(line)); err != nil {
		logf("writing ready line: %v", err)
		return shutdown(1, kcm)
	}
	logf("ready in %v: %s", time.Since(start).Round(time.Millisecond), api.url)

	code := 0
	select {
	case <-ctx.Done():
		if c := context.Cause(ctx); c != nil && c != context.Canceled {
			logf("%v", c)
		}
	case err := <-api.done:
		logf("kube-apiserver exited: %v", err)
		code = 1
	case err := <-kcm.done:
		logf("kube-controller-manager exited: %v", err)
		code = 1
	case err := <-scheduler.done:
		logf("kube-scheduler exited: %v", err)
		code = 1
	case err := <-etcd.errc:
		logf("etcd failed: %v", err)
		code = 1
	}
	// A second signal during shutdown exits at once (after removing the
	// temporary directory).
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		logf("second signal, exiting now")
		runCleanup()
		os.Exit(1)
	}()
	stop()
	return shutdown(code, kcm)
}

func errOrCause(err error, ctx context.Context) error {
	if c := context.Cause(ctx); c != nil {
		return c
	}
	return err
}

func prepareDir(dir string) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "treffpunkt-testenv-")
		if err != nil {
			return "", err
		}
		return d, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	// Every run starts with an empty etcd.
	if err := os.RemoveAll(filepath.Join(abs, "etcd")); err != nil {
		return "", err
	}
	return abs, nil
}

// watchStdin calls onEOF when stdin reaches EOF, unless stdin is /dev/null or
// not open (then the harness cannot be watched that way).
func watchStdin(onEOF func()) {
	st, err := os.Stdin.Stat()
	if err != nil {
		logf("stdin is not open; not watching it")
		return
	}
	if null, err := os.Stat(os.DevNull); err == nil && os.SameFile(st, null) {
		logf("stdin is %s; not watching it (stop with SIGTERM/SIGINT)", os.DevNull)
		return
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		onEOF()
	}()
}
