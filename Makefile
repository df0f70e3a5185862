# Signet. The two commands for a fresh machine: `make demo` and `make test`.
GO        ?= go
BIN       ?= bin/signet
PKGS      ?= ./...
# The concurrent core runs under the race detector in `make test`; the rest
# (mounts, nginx, PostgreSQL, the built binary) without, to keep CI short.
RACE_PKGS ?= ./server/... ./agent/... ./internal/...
FUZZTIME  ?= 4s
# Extra flags for the fuzz runs; make test passes -parallel=1 (one worker) as
# they share the machine with the end-to-end tests.
FUZZFLAGS ?=
# Targets fuzzed at once; make test runs two, one worker each: the fuzz
# builds leave the end-to-end tests mostly waiting by the time they run.
FUZZJOBS  ?= 1
# package:FuzzTarget pairs run briefly by `make test` (`make fuzz FUZZTIME=5m` for longer).
FUZZ_TARGETS ?= \
	./internal/ids:FuzzParseID \
	./internal/selector:FuzzParse \
	./agent:FuzzParseConfig \
	./agent:FuzzParseTrustBundle \
	./agent/attestor:FuzzParseCgroup \
	./agent/attestor:FuzzSystemdUnit \
	./helper:FuzzParseConfig \
	./csidriver:FuzzValidateTargetPath \
	./server:FuzzParseConfig \
	./server/store:FuzzParseURL \
	./server/nodeattest:FuzzX509PoPPayload \
	./server/nodeattest:FuzzSSHPoPPayload \
	./server/nodeattest:FuzzAWSIIDPayload \
	./server/nodeattest:FuzzGCPIITPayload \
	./server/adminapi:FuzzParseEntryFile \
	./server/adminapi:FuzzParseEntryIDs \
	./server/adminapi:FuzzParseBundleFile \
	./server/federation:FuzzResolveConfig \
	./server/k8sreg:FuzzRender \
	./server/k8sreg:FuzzStaticEntry \
	./server/k8sreg:FuzzFederatedTrustDomain \
	./agent/client:FuzzOwnBundleFromProto \
	./agent/client:FuzzParseSVIDFile \
	./server/nested:FuzzBundleFromProto \
	./server/oidcdiscovery:FuzzCheckIssuer

.PHONY: all build test test-race-core test-kube-e2e fuzz bench demo lint deps proto clean kube-bins

all: build

build:
	$(GO) build -o $(BIN) ./cmd/signet

# deps installs what the tests need on a fresh machine (apt packages); it is
# idempotent and quiet when everything is present.
deps:
	@bash test/setup.sh

# test is everything CI runs: lint, unit + integration + end-to-end tests, and
# a short run of every fuzz target.
#
# On 2 cores the long compiles share the machine with tests that mostly
# wait: kube-bins runs beside the race tests of the packages that need no
# kube-apiserver, and the fuzz targets (whose instrumented build is the
# other long compile) beside the tests that do, and the end-to-end tests.
test: deps lint
	@$(MAKE) --no-print-directory -j2 kube-bins test-race-core
	@$(MAKE) --no-print-directory -j2 test-kube-e2e fuzz FUZZFLAGS=-parallel=1 FUZZJOBS=2

KUBE_RACE_PKGS = ./server/k8sreg ./internal/kubetest

test-race-core:
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list $(RACE_PKGS) | grep -vxF "$$($(GO) list $(KUBE_RACE_PKGS))")

test-kube-e2e:
	$(KUBE_ENV) $(GO) test -race -count=1 -timeout 20m $(KUBE_RACE_PKGS)
	$(KUBE_ENV) $(GO) test -count=1 -timeout 20m $$($(GO) list $(PKGS) | grep -Ev '/(server|agent|internal)(/|$$)')

# kube-bins builds a real etcd and kube-apiserver from the Go module proxy
# (test/kube/*: their own modules, so k8s.io/kubernetes stays out of go.mod)
# for the end-to-end tests. The first build takes minutes; later ones ~1 s.
KUBE_VERSION ?= 1.37.2
KUBE_LDFLAGS  = -s -w -X k8s.io/component-base/version.gitVersion=v$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(KUBE_VERSION))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE_VERSION))) \
	-X k8s.io/client-go/pkg/version.gitVersion=v$(KUBE_VERSION)
KUBE_ENV      = SIGNET_KUBE_APISERVER=$(abspath bin/kube/kube-apiserver) SIGNET_ETCD=$(abspath bin/kube/etcd)

kube-bins:
	cd test/kube/etcd && $(GO) build -trimpath -o ../../../bin/kube/etcd .
	cd test/kube/apiserver && $(GO) build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o ../../../bin/kube/kube-apiserver .

fuzz:
	@GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZFLAGS='$(FUZZFLAGS)' FUZZJOBS=$(FUZZJOBS) bash test/fuzz.sh $(FUZZ_TARGETS)

bench: deps build
	$(GO) test -run='^$$' -bench=. -benchtime=2s -timeout 30m $(PKGS)

demo: build
	@bash examples/demo/demo.sh $(BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# proto regenerates the Go code of every .proto: the server's API, and the
# agent's Delegated Identity API and the nested servers' API (SPIRE's package
# names, for wire compatibility).
PROTOS = server/api/*.proto server/nested/types/*.proto server/nested/svidv1/*.proto server/nested/bundlev1/*.proto \
	agent/delegatedidentity/types/*.proto agent/delegatedidentity/v1/*.proto

proto:
	protoc -I . --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

clean:
	rm -rf bin
