<?xml version="1.0" encoding="utf-8"?>
<!-- Local Chandra observation table for xmine's integration tests.

  Schema chandra, table observations: one row per ACIS observation with its
  pointing, roll, exposure and time range (column names as in the CSC 2.1
  observation-level tables where they exist).  Rows are written by
  ../make_data.py from xmine's simulator; not measurements.

  RD id: chandra/q.  TAP: http://localhost:8080/tap
-->
<resource schema="chandra" resdir=".">
  <meta name="title">Chandra observations (local, simulated rows)</meta>
  <meta name="description">Simulated Chandra ACIS observations for testing
    TAP clients; the values are not measurements.</meta>
  <meta name="creationDate">2026-11-23T00:00:00Z</meta>
  <meta name="subject">x-ray-observations</meta>
  <meta name="creator">xmine test fixtures</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Catalog</meta>
  <meta name="coverage.waveband">X-ray</meta>

  <table id="observations" onDisk="True" adql="True" primary="obsid,obi">
    <meta name="description">One row per Chandra observation interval.</meta>
    <index columns="obsid"/>
    <column name="obsid" type="integer" ucd="meta.id;obs" required="True"
      description="Chandra observation id."/>
    <column name="obi" type="integer" ucd="meta.id;obs" required="True"
      description="Observation interval number."/>
    <column name="ra_pnt" type="double precision" unit="deg" ucd="pos.eq.ra;instr.pointing"
      required="True" description="Pointing right ascension (ICRS)."/>
    <column name="dec_pnt" type="double precision" unit="deg" ucd="pos.eq.dec;instr.pointing"
      required="True" description="Pointing declination (ICRS)."/>
    <column name="roll" type="double precision" unit="deg" ucd="pos.posAng;instr"
      description="Roll angle."/>
    <column name="instrument" type="text" ucd="meta.id;instr"
      description="ACIS-I or ACIS-S."/>
    <column name="exposure_s" type="double precision" unit="s" ucd="time.duration;obs.exposure"
      description="Live time."/>
    <column name="gti_obs" type="text" ucd="time.start;obs"
      description="Start of the good time, ISO 8601 (TT)."/>
    <column name="gti_end" type="text" ucd="time.end;obs"
      description="End of the good time, ISO 8601 (TT)."/>
    <column name="target_name" type="text" ucd="meta.id;src"
      description="Target name."/>
    <column name="detect_stack_id" type="text" ucd="meta.id;obs"
      description="CSC 2.1 detect stack holding this observation."/>
  </table>

  <data id="import">
    <sources pattern="data/observations.csv"/>
    <csvGrammar/>
    <make table="observations">
      <rowmaker idmaps="*"/>
    </make>
  </data>
</resource>
