# Convenience wrappers; the README documents the scripts (a fresh machine may lack make).
# Extra arguments: make run ARGS="--tcp-port 10443"   make test ARGS="-k transport"

.PHONY: run test

run:
	./scripts/run $(ARGS)

test:
	./scripts/test $(ARGS)
