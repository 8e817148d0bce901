"""Test and benchmark tools: real ZooKeeper servers, a fault-injecting TCP proxy, child
processes. Not part of the installed package."""
