package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// defaultSocket is where the control API listens and the client looks.
const defaultSocket = "/run/vramseal/agent.sock"

// defaultConfigFile is the configuration's one default path: the systemd
// unit installs it there and the Helm chart mounts its ConfigMap, as a
// directory, on /etc/vramseal.
const defaultConfigFile = "/etc/vramseal/config.yml"

// Shutdown bounds.
const (
	releaseTimeout    = 60 * time.Second
	auditFlushTimeout = 5 * time.Second
	webStopTimeout    = 5 * time.Second
)

type runOptions struct {
	configFile    string
	configWatch   time.Duration
	web           *web.FlagConfig
	telemetryPath string
	socket        string
	logLevel      string
	logFormat     string
}

func runCommand(app *kingpin.Application) (string, action) {
	cmd := app.Command("run", "Run the agent: seal the declared shards, re-verify every shard on schedule, serve the control API and /metrics.")
	o := &runOptions{}
	cmd.Flag("config.file", "Path to the configuration file (YAML).").Default(defaultConfigFile).StringVar(&o.configFile)
	cmd.Flag("config.auto-reload-interval", "How often to check the configuration file (and, on Kubernetes, its mounted ConfigMap directory) for changes, reloading it when it changed as on SIGHUP; 0 turns the check off.").Default("10s").DurationVar(&o.configWatch)
	o.web = kingpinflag.AddFlags(cmd, ":9477")
	cmd.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").StringVar(&o.telemetryPath)
	cmd.Flag("control.socket", "Path of the control API's Unix socket.").Default(defaultSocket).StringVar(&o.socket)
	cmd.Flag("log.level", "Only log messages with the given severity or above: debug, info, warn, error.").Default("info").EnumVar(&o.logLevel, "debug", "info", "warn", "error")
	cmd.Flag("log.format", "Output format of log messages: logfmt or json.").Default("logfmt").EnumVar(&o.logFormat, "logfmt", "json")
	return cmd.FullCommand(), func(ctx context.Context, c cli) int { return runAgent(ctx, o, c) }
}

// runAgent runs until ctx ends (SIGTERM, SIGINT), then shuts down
// gracefully and returns the exit status.
func runAgent(ctx context.Context, o *runOptions, c cli) int {
	log, err := newLogger(c.stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintf(c.stderr, "vramseal-agent run: %v\n", err)
		return exitUsage
	}
	if len(o.telemetryPath) == 0 || o.telemetryPath[0] != '/' || o.telemetryPath == "/" {
		log.Errorf("--web.telemetry-path %q: want a path starting with / other than /", o.telemetryPath)
		return exitUsage
	}
	// SIGHUP reloads; registered before anything starts so an early one is
	// not fatal.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if o.configWatch < 0 {
		log.Errorf("--config.auto-reload-interval %s: want 0 (off) or more", o.configWatch)
		return exitUsage
	}
	// Fingerprinted before the load, so that a change in between is seen.
	watch := newConfigWatch(o.configFile, o.configWatch)
	// Before anything can load the CUDA driver, which reads it at cuInit.
	if err := setCUDADeviceOrder(os.Getenv, os.Setenv, log); err != nil {
		log.WithError(err).Error("cannot set the CUDA device order")
		return exitFailed
	}
	cfg, err := config.Load(o.configFile)
	if err != nil {
		log.WithError(err).Error("cannot load the configuration")
		return exitUsage
	}
	a, err := newAgent(ctx, cfg, log, cuda.Open)
	if err != nil {
		log.WithError(err).Error("cannot start the agent")
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return exitFailed
	}
	defer a.close()
	memLimit := applyMemoryLimit(memoryLimit(ctx, cfg, a.gpus.devs, os.Getenv))
	gogc := applyGCPercent(os.Getenv)
	if gogc == "" {
		gogc = strconv.Itoa(defaultGCPercent)
	}
	// The VRAM-only policy checks the GPUs in use before anything is sealed.
	if err := a.policy.CheckStartup(ctx, usedGPUs(cfg)); err != nil {
		log.WithError(err).Error("stopping: the VRAM-only policy is violated and policy.exit_on_violation is set")
		return exitPolicy
	}
	ln, err := control.Listen(o.socket, a.controlGID)
	if err != nil {
		log.WithError(err).Error("cannot open the control socket (set --control.socket to a writable path)")
		return exitUsage
	}
	var hln *net.UnixListener
	if a.handoff != nil {
		if hln, err = control.Listen(cfg.Handoff.Socket, a.handoffGID); err != nil {
			ln.Close()
			log.WithError(err).Error("cannot open the consumer socket (handoff.socket)")
			return exitUsage
		}
	}
	webHandler, err := newWebHandler(a, o.telemetryPath)
	if err != nil {
		ln.Close()
		if hln != nil {
			hln.Close()
		}
		log.WithError(err).Error("cannot build the web handler")
		return exitFailed
	}
	fields := logrus.Fields{
		logfield.Version: version.Info(), logfield.WorkerID: cfg.WorkerID, logfield.Device: cfg.Device,
		logfield.GPUs: a.sealer.GPUs(), logfield.Socket: o.socket, logfield.Listen: *o.web.WebListenAddresses,
		logfield.ConfigFile: o.configFile, logfield.MemoryLimit: memLimit, logfield.GOGC: gogc,
	}
	log.WithFields(fields).Info("vramseal agent starting")
	if a.sims != nil {
		log.WithFields(fields).Warn("running on SIMULATED GPUs (device: sim): VRAM is host memory; for tests and demos only")
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	a.declared.Set(cfg.DeclaredShards())
	wg.Go(func() { _ = a.declared.Run(runCtx) })
	wg.Go(func() { _ = a.schedule.Run(runCtx) })
	wg.Go(func() { _ = a.metrics.Run(runCtx) })
	wg.Go(func() { _ = watch.Run(runCtx) })
	log.WithFields(logrus.Fields{logfield.ConfigFile: o.configFile, logfield.AutoReload: o.configWatch.String()}).
		Debug("watching the configuration file for changes (0s: off)")
	controlErr := make(chan error, 1)
	wg.Go(func() { controlErr <- a.control.Serve(runCtx, ln) })
	// The consumer socket outlives the rest until the shards are released:
	// consumers close their leases during the shutdown wait.
	handoffCtx, stopHandoff := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHandoff()
	handoffDone := make(chan error, 1)
	if hln != nil {
		log.WithField(logfield.Socket, cfg.Handoff.Socket).Info("serving consumers on the consumer socket")
		go func() { handoffDone <- a.handoff.Serve(handoffCtx, hln) }()
	} else {
		close(handoffDone)
	}

	srv := &http.Server{Handler: webHandler, ReadHeaderTimeout: 10 * time.Second}
	webErr := make(chan error, 1)
	go func() { webErr <- web.ListenAndServe(srv, o.web, newSlog(log.WithField(logfield.Component, "web"))) }()
	// systemd (Type=notify): READY=1 once serving, STATUS=, the watchdog (notify.go);
	// kept up until the agent exits.
	sd := newNotifier(log)
	notifyCtx, stopNotify := context.WithCancel(context.WithoutCancel(ctx))
	defer stopNotify()
	go sd.run(notifyCtx, listening(*o.web.WebSystemdSocket, *o.web.WebListenAddresses), a.notifyStatus)

	code := exitOK
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down: stopping the schedule, releasing every shard")
			break loop
		case <-hup:
			sd.reloading()
			a.reload(o.configFile, reloadSIGHUP)
			sd.ready()
		case <-watch.Changed():
			a.reload(o.configFile, reloadFileChanged)
		case <-a.policy.Exit():
			log.WithError(a.policy.ExitErr()).Error("stopping: the VRAM-only policy is violated and policy.exit_on_violation is set")
			code = exitPolicy
			break loop
		case err := <-webErr:
			log.WithError(err).Error("the web server stopped; shutting down")
			code = exitFailed
			webErr = nil
			break loop
		case err := <-controlErr:
			if err != nil {
				log.WithError(err).Error("the control API stopped; shutting down")
				code = exitFailed
			}
			break loop
		}
	}
	sd.stopping()
	code = a.shutdown(stop, &wg, srv, webErr, code)
	stopHandoff()
	<-handoffDone
	return code
}

// shutdown stops the schedule, the reconciler and the control API
// (cancelling work in flight), releases every shard, stops the web server
// and flushes the audit output, each bounded.
func (a *agent) shutdown(stop context.CancelFunc, wg *sync.WaitGroup, srv *http.Server, webErr chan error, code int) int {
	stop()
	wg.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), releaseTimeout+a.cfg.Handoff.ShutdownWait)
	defer cancel()
	n := len(a.sealer.List())
	if err := a.sealer.Shutdown(rctx); err != nil {
		a.log.WithError(err).Error("releasing shards at shutdown failed")
		code = exitFailed
	} else {
		a.log.WithField(logfield.Released, n).Info("every shard released")
	}
	wctx, wcancel := context.WithTimeout(context.Background(), webStopTimeout)
	defer wcancel()
	if err := srv.Shutdown(wctx); err != nil {
		srv.Close()
	}
	if webErr != nil {
		select {
		case <-webErr:
		case <-wctx.Done():
		}
	}
	actx, acancel := context.WithTimeout(context.Background(), auditFlushTimeout)
	defer acancel()
	if err := a.audit.Close(actx); err != nil {
		a.log.WithError(err).Error("flushing the audit output at shutdown failed")
	}
	a.log.WithField(logfield.ExitStatus, code).Info("vramseal agent stopped")
	return code
}
