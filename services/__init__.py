"""The four pipeline services: taxonomy, generator, judge, selector."""
