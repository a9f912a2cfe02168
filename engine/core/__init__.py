"""Pure firewall logic: rule model, CRD YAML, compiler, reference classifier, guard."""
