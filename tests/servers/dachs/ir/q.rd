<?xml version="1.0" encoding="utf-8"?>
<!-- Local infrared-like point-source table for xmine's cross-match tests.

  Schema ir, table twomass_like: columns as 2MASS PSC at IRSA (designation,
  ra, dec, err_maj/err_min 1-sigma ellipse axes in arcsec, j_m, h_m, k_m).
  Rows are written by make_ir.py from the simulated CSC rows in
  ../csc21/data (counterparts with known offsets, plus field stars);
  truth.csv beside this file says which row belongs to which CSC source.
  Not measurements.

  RD id: ir/q.  TAP: http://localhost:8080/tap (uploads: TAP_UPLOAD.name)
-->
<resource schema="ir" resdir=".">
  <meta name="title">Infrared-like point sources (local, simulated rows)</meta>
  <meta name="description">Made-up rows laid out like the 2MASS point source
    catalogue, around the simulated CSC sources, for cross-match tests;
    the values are not measurements.</meta>
  <meta name="creationDate">2026-11-23T00:00:00Z</meta>
  <meta name="subject">infrared-sources</meta>
  <meta name="creator">xmine test fixtures</meta>
  <meta name="contentLevel">Research</meta>
  <meta name="type">Catalog</meta>
  <meta name="coverage.waveband">Infrared</meta>

  <table id="twomass_like" onDisk="True" adql="True"
      mixin="//scs#pgs-pos-index" primary="designation">
    <meta name="description">One row per infrared point source.</meta>
    <stc>Position ICRS "ra" "dec"</stc>
    <column name="designation" type="text" ucd="meta.id;meta.main"
      tablehead="Name" verbLevel="1" required="True"
      description="Source designation, Jhhmmssss+ddmmsss."/>
    <column name="ra" type="double precision" unit="deg"
      ucd="pos.eq.ra;meta.main" verbLevel="1" required="True"
      description="ICRS right ascension."/>
    <column name="dec" type="double precision" unit="deg"
      ucd="pos.eq.dec;meta.main" verbLevel="1" required="True"
      description="ICRS declination."/>
    <column name="err_maj" type="double precision" unit="arcsec"
      ucd="stat.error;pos.errorEllipse;stat.max"
      description="1-sigma major axis of the position error ellipse."/>
    <column name="err_min" type="double precision" unit="arcsec"
      ucd="stat.error;pos.errorEllipse;stat.min"
      description="1-sigma minor axis of the position error ellipse."/>
    <column name="err_ang" type="double precision" unit="deg"
      ucd="pos.posAng;pos.errorEllipse"
      description="Position angle of the error ellipse."/>
    <column name="j_m" type="double precision" unit="mag" ucd="phot.mag;em.IR.J"
      description="J magnitude."/>
    <column name="h_m" type="double precision" unit="mag" ucd="phot.mag;em.IR.H"
      description="H magnitude."/>
    <column name="k_m" type="double precision" unit="mag" ucd="phot.mag;em.IR.K"
      description="Ks magnitude."/>
  </table>

  <data id="import">
    <sources pattern="data/twomass_like.csv"/>
    <csvGrammar/>
    <make table="twomass_like">
      <rowmaker idmaps="*"/>
    </make>
  </data>

  <service id="cone" allowed="form,scs.xml">
    <meta name="shortName">ir test cone</meta>
    <meta name="testQuery">
      <meta name="ra">150.125</meta>
      <meta name="dec">2.21</meta>
      <meta name="sr">0.01</meta>
    </meta>
    <scsCore queriedTable="twomass_like">
      <FEED source="//scs#coreDescs"/>
    </scsCore>
  </service>
</resource>
