package main

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/signetid/signet/helper"
)

// newHelperCmd is `signet helper`: rotating PEM/JWT files for legacy apps.
func newHelperCmd(g *globals) *cobra.Command {
	var (
		configFile, socket, certDir, pidFile, renewSignal, reloadCmd string
		hint, jwtBundleFile, healthListen, uid, gid                  string
		certMode, keyMode, jwtSVIDMode, jwtBundleMode                string
		svidFile, keyFile, bundleFile                                string
		jwtSVIDs                                                     []string
		once, daemonMode, federated, intermediates, omitExpired      bool
		reloadOnJWT                                                  bool
		cfg                                                          = helper.NewConfig()
	)
	cmd := &cobra.Command{
		Use:   "helper [flags] [-- cmd args...]",
		Short: "Keep an SVID, key, bundles and JWTs on disk and reload the app that reads them",
		Long: `signet helper is a SPIFFE Workload API client that writes the X.509-SVID
(svid.pem), its PKCS#8 key (svid_key.pem), the trust bundle (bundle.pem),
JWT-SVIDs and JWT bundles into --cert-dir, atomically as a set, and after every
rotation signals the PID in --pid-file, runs --reload-cmd, or signals the
supervised child given after "--" (started after the first write; signals to
the helper are forwarded to it; the helper exits with its status, or 128+n
when signal n came before the child started). --config reads an unchanged
spiffe-helper helper.conf.
Every flag may also be set as SIGNET_HELPER_<FLAG> (e.g. SIGNET_HELPER_CERT_DIR);
the socket also comes from SPIFFE_ENDPOINT_SOCKET.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if err := flagsFromEnv(fl); err != nil {
				return err
			}
			if configFile != "" {
				if err := helper.LoadConfigFile(configFile, &cfg); err != nil {
					return err
				}
			}
			changed := func(name string) bool { return fl.Changed(name) }
			// helper.conf's log_level, unless --log-level (or its
			// environment variable) says otherwise.
			if cfg.LogLevel != "" && !changed("log-level") {
				g.logLevel = cfg.LogLevel
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			str := func(name string, dst *string, v string) {
				if changed(name) {
					*dst = v
				}
			}
			str("socket", &cfg.AgentAddress, socket)
			str("cert-dir", &cfg.CertDir, certDir)
			str("pid-file", &cfg.PIDFileName, pidFile)
			str("renew-signal", &cfg.RenewSignal, renewSignal)
			str("hint", &cfg.Hint, hint)
			str("jwt-bundle-file", &cfg.JWTBundleFileName, jwtBundleFile)
			str("health-listen", &cfg.HealthChecks.Listen, healthListen)
			if configFile == "" {
				// Flags alone: each name is its flag's value, default or not,
				// so --svid-file tls.crt on its own keeps the other defaults.
				cfg.SVIDFileName = cmp.Or(svidFile, helper.DefaultSVIDFileName)
				cfg.SVIDKeyFileName = cmp.Or(keyFile, helper.DefaultSVIDKeyFileName)
				cfg.SVIDBundleFileName = cmp.Or(bundleFile, helper.DefaultSVIDBundleFileName)
			} else {
				str("svid-file", &cfg.SVIDFileName, svidFile)
				str("key-file", &cfg.SVIDKeyFileName, keyFile)
				str("bundle-file", &cfg.SVIDBundleFileName, bundleFile)
			}
			if changed("include-federated-domains") {
				cfg.IncludeFederatedDomains = federated
			}
			if changed("add-intermediates-to-bundle") {
				cfg.AddIntermediatesToBundle = intermediates
			}
			if changed("omit-expired") {
				cfg.OmitExpired = omitExpired
			}
			if changed("reload-on-jwt") {
				cfg.ReloadOnJWT = reloadOnJWT
			}
			if changed("daemon-mode") {
				cfg.DaemonMode = daemonMode
			}
			if once {
				cfg.DaemonMode = false
			}
			for name, dst := range map[string]*fs.FileMode{
				"cert-file-mode": &cfg.CertFileMode, "key-file-mode": &cfg.KeyFileMode,
				"jwt-svid-file-mode": &cfg.JWTSVIDFileMode, "jwt-bundle-file-mode": &cfg.JWTBundleFileMode,
			} {
				if changed(name) {
					v, _ := fl.GetString(name)
					m, err := strconv.ParseUint(v, 8, 32)
					if err != nil || m > 0o777 {
						return fmt.Errorf("--%s %q: want an octal mode such as 0600", name, v)
					}
					*dst = fs.FileMode(m)
				}
			}
			if changed("uid") {
				if cfg.UID, err = lookupID(uid, userID); err != nil {
					return fmt.Errorf("--uid: %w", err)
				}
			}
			if changed("gid") {
				if cfg.GID, err = lookupID(gid, groupID); err != nil {
					return fmt.Errorf("--gid: %w", err)
				}
			}
			for _, j := range jwtSVIDs {
				aud, file, ok := strings.Cut(j, "=")
				if !ok {
					return fmt.Errorf("--jwt-svid %q: want AUDIENCE=FILE", j)
				}
				auds := strings.Split(aud, ",")
				cfg.JWTSVIDs = append(cfg.JWTSVIDs, helper.JWTSVIDConfig{Audience: auds[0], ExtraAudiences: auds[1:], FileName: file})
			}
			if reloadCmd != "" {
				if cfg.ReloadCommand, err = helper.SplitArgs(reloadCmd); err != nil {
					return fmt.Errorf("--reload-cmd: %w", err)
				}
			}
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				cfg.Child = args[dash:]
			} else if len(args) > 0 {
				return fmt.Errorf("unexpected arguments %q (put a command to supervise after --)", args)
			}
			if len(cfg.Child) > 0 && !cfg.DaemonMode {
				return errors.New("--once cannot supervise a child")
			}
			err = helper.Run(cmd.Context(), cfg, helper.WithLogger(log))
			var ce *helper.ChildExitError
			if errors.As(err, &ce) {
				if ce.Code == 0 {
					return nil
				}
				return exitError{code: ce.Code}
			}
			var se *helper.SignalError
			if errors.As(err, &se) {
				// 128+n with the reason as the one line on stderr; main's
				// exitError would print only "exit status n".
				fmt.Fprintf(cmd.ErrOrStderr(), "signet: %v\n", se)
				os.Exit(se.ExitCode())
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "spiffe-helper helper.conf (HCL) to read; flags override it")
	f.StringVar(&socket, "socket", "", "Workload API socket (unix:///path or path; default $SPIFFE_ENDPOINT_SOCKET)")
	f.StringVar(&certDir, "cert-dir", "", "directory for the files (created if missing)")
	f.BoolVar(&once, "once", false, "init mode: wait for the socket and an identity, write the files, exit 0")
	f.BoolVar(&daemonMode, "daemon-mode", true, "spiffe-helper's daemon_mode; false is --once")
	f.DurationVar(&cfg.Timeout, "timeout", helper.DefaultTimeout, "init mode: how long to wait for the socket and an identity")
	f.StringVar(&pidFile, "pid-file", "", "signal the PID in this file after every rotation (needs --renew-signal)")
	f.StringVar(&renewSignal, "renew-signal", "", "signal for --pid-file, cmd or the supervised child (child default SIGHUP)")
	f.StringVar(&reloadCmd, "reload-cmd", "", `command to run after every rotation, e.g. "nginx -s reload"`)
	f.BoolVar(&reloadOnJWT, "reload-on-jwt", false, "also reload after JWT-SVID renewals")
	f.DurationVar(&cfg.Debounce, "debounce", helper.DefaultDebounce, "coalesce reloads within this window")
	f.StringVar(&uid, "uid", "", "owner of the written files (user name or number)")
	f.StringVar(&gid, "gid", "", "group of the written files (group name or number)")
	f.StringVar(&certMode, "cert-file-mode", "0644", "mode of the certificate and bundle files")
	f.StringVar(&keyMode, "key-file-mode", "0600", "mode of the key file")
	f.StringVar(&jwtSVIDMode, "jwt-svid-file-mode", "0600", "mode of JWT-SVID files")
	f.StringVar(&jwtBundleMode, "jwt-bundle-file-mode", "0600", "mode of JWT bundle files")
	f.StringVar(&svidFile, "svid-file", "", "certificate chain file name (default svid.pem)")
	f.StringVar(&keyFile, "key-file", "", "key file name (default svid_key.pem)")
	f.StringVar(&bundleFile, "bundle-file", "", "trust bundle file name (default bundle.pem)")
	f.StringArrayVar(&jwtSVIDs, "jwt-svid", nil, "AUDIENCE[,EXTRA...]=FILE: keep a JWT-SVID in FILE (repeatable)")
	f.StringVar(&jwtBundleFile, "jwt-bundle-file", "", "JWT bundles file name (plus one JWKS per trust domain beside it)")
	f.BoolVar(&federated, "include-federated-domains", false, "add federated trust domains' CAs to the bundle file")
	f.BoolVar(&intermediates, "add-intermediates-to-bundle", false, "put intermediates in the bundle file, not the SVID file")
	f.BoolVar(&omitExpired, "omit-expired", false, "leave expired certificates out of the files")
	f.StringVar(&hint, "hint", "", "pick the SVID with this hint")
	f.StringVar(&healthListen, "health-listen", "", "serve /live and /ready on this address")
	f.DurationVar(&cfg.LiveThreshold, "live-threshold", helper.DefaultLiveThreshold, "/live fails after the Workload API stream is down this long")
	return cmd
}

// flagsFromEnv sets every flag not given on the command line from
// SIGNET_HELPER_<NAME>, for pod specs.
func flagsFromEnv(fl *pflag.FlagSet) error {
	var err error
	fl.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		env := "SIGNET_HELPER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := fl.Set(f.Name, v); serr != nil {
				err = fmt.Errorf("%s: %w", env, serr)
			}
		}
	})
	return err
}

// lookupID resolves a number or, through lookup, a name.
func lookupID(v string, lookup func(string) (string, error)) (int, error) {
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return n, nil
	}
	id, err := lookup(v)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}

func userID(name string) (string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return "", err
	}
	return u.Uid, nil
}

func groupID(name string) (string, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return "", err
	}
	return g.Gid, nil
}
