"""A virtual-time fleet simulation (issue 18): the real app and store on in-process moto,
with the clock, Fly's transport and the machines simulated as seeded events."""
