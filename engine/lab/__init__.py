"""The throwaway lab: network namespaces, veth pairs and the traffic that crosses them."""
