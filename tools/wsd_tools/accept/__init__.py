"""wsd-accept: the accept/negotiation sequence of the switch, step by step, with timings."""
