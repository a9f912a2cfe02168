"""infw engine: rule model, compiler, reference classifier, guard, store and datapath."""
