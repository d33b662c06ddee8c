-- A singular test: any row returned is a failure.
select * from "test"."opsdata_try"."customer_totals" where total < 0